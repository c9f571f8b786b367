"""The muse_mrf experiment end to end on its tiny variant, and its config checks before compute."""

import json
import os

import numpy as np
import pytest

from common import config_lib
from common.data import loader
from configs.muse_mrf import digits
from muse_mrf import experiment


def test_tiny_experiment_writes_summary_with_stated_checks(tmp_path):
  """The paper's one end-to-end run in the default suite (~35 compiled programs, ~1 CPU-min)."""
  config = digits.get_config('tiny')
  summary = experiment.run(config, str(tmp_path))
  on_disk = json.loads((tmp_path / 'summary.json').read_text())
  assert on_disk['name'] == 'muse_mrf' and isinstance(on_disk['reproduced'], bool)
  rows = on_disk['numbers']['samplers']
  assert set(rows) == {'maskgit_T4', 'maskgit_T8', 'mrf_T4', 'unary_scale_only_T4'}
  assert rows['maskgit_T8']['backbone_calls'] == 8 and rows['mrf_T4']['backbone_calls'] == 4
  for row in rows.values():
    assert 0.0 <= row['accuracy'] <= 1.0 and row['fd'] >= -1e-6 and row['seconds'] > 0
  real = on_disk['numbers']['real_images']   # the floor: 40 held-out digits the scorer never saw
  assert real['images'] == config.scorer_holdout == 40 and real['fd'] >= -1e-6
  names = [c['name'] for c in on_disk['checks']]
  assert len(names) == 7 and any('backbone calls' in n for n in names)
  deciding = [c for c in on_disk['checks'] if not c['informational']]
  assert on_disk['reproduced'] == all(c['holds'] for c in deciding)
  assert all(os.path.exists(tmp_path / f) for f in on_disk['figures'])
  assert summary['reproduced'] == on_disk['reproduced']
  assert not (tmp_path / 'jax_cache').exists()   # one cache per process, opened by common.app
  # A rerun resumes every training run from its checkpoint and gives the same numbers.
  again = experiment.run(config, str(tmp_path))
  assert again['numbers']['backbone_final_loss'] == on_disk['numbers']['backbone_final_loss']


def test_frechet_distance():
  rng = np.random.default_rng(0)
  a = rng.normal(size=(4000, 3))
  assert experiment.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
  shifted = experiment.frechet_distance(a, a + np.array([2.0, 0.0, 0.0])[None])
  assert shifted == pytest.approx(4.0, rel=1e-3)
  # Var 1 against var 4 in one dimension: (1 - 2)^2 = 1.
  b = a.copy()
  b[:, 1] *= 2
  assert experiment.frechet_distance(a, b) == pytest.approx(1.0, rel=0.05)
  with pytest.raises(ValueError, match='Feature sets'):
    experiment.frechet_distance(a, a[:, :2])


@pytest.mark.parametrize('field,value,match', [
    ('tokenizer.kind', 'pixels', r"tokenizer.kind='pixels': use one of \('grey'"),
    ('tokenizer.levels', 1, r'tokenizer.levels=1: expected a whole number >= 2'),
    ('mask_schedule', 'cubic', 'mask_schedule'),
    ('mask_schedule', 'arccos', "it is the 'cosine' schedule"),
    ('label_smoothing', 1.0, r'label_smoothing=1.0: expected a finite number in \[0.0, 1.0\)'),
    ('model.num_heads', 3, r'model.d_model=32 is not a multiple of model.num_heads=3'),
    ('model.attention', 'flash', 'model.attention'),
    # An even window has no centre: found only when the MRF layer is built, after the backbone.
    ('mrf_layer.window', 2, r'mrf_layer.window=2: expected an odd whole number >= 3'),
    ('mrf_layer.window', 4, r'mrf_layer.window=4'),
    ('mrf_layer.iterations', 0, r'mrf_layer.iterations=0'),
    ('mrf_layer.rank', 0, r'mrf_layer.rank=0'),
    ('sampling.plain_steps', (0, 8), r'sampling.plain_steps=\(0, 8\)'),
    ('sampling.mrf_steps', (2,), 'must hold them'),
    ('sampling.tau', -1.0, r'sampling.tau=-1.0: the confidence noise scale must be a finite'),
    ('sampling.tau', -5.0, r'sampling.tau=-5.0'),
    ('sampling.tau', float('nan'), r'sampling.tau=nan'),
    ('sampling.per_class', 0, r'sampling.per_class=0'),
    ('sampling.mrf_fill', 'mode', r'sampling.mrf_fill'),
    ('mrf_r_range', (0.9, 0.5), 'mrf_r_range'),
    ('backbone.batch_size', 0, r'backbone.batch_size=0'),
    ('mrf.optimizer.learning_rate', -1e-2, r'mrf.optimizer.learning_rate=-0.01'),
    ('scorer.optimizer.name', 'adamm', r'scorer: Unknown optimizer'),
    ('scorer_model.name', 'mlpp', r'scorer_model: Unknown model'),
    ('claim.calls_ratio', 0.0, r'claim.calls_ratio=0.0'),
    ('claim.acc_margin', float('inf'), r'claim.acc_margin=inf'),
    ('seed', -1, r'seed=-1'),
    ('scorer_holdout', 1, r'scorer_holdout=1: expected a whole number >= 2'),
])
def test_bad_config_fails_before_compute(tmp_path, field, value, match):
  config = digits.get_config('tiny')
  section, _, key = field.rpartition('.')
  target = config
  for part in section.split('.') if section else ():
    target = target[part]
  with target.unlocked():
    target[key] = value
  with pytest.raises(config_lib.ConfigError, match=match):
    experiment.check_config(config)
  with pytest.raises(config_lib.ConfigError, match=match):   # run checks first, before compute
    experiment.run(config, str(tmp_path))
  assert not os.path.exists(tmp_path / 'backbone')


@pytest.mark.parametrize('variant', digits.VARIANTS)
def test_every_variant_passes_check_config(variant):
  experiment.check_config(digits.get_config(variant))


def test_labels_outside_the_classes_are_refused_with_the_split_named():
  experiment.check_labels(np.array([0, 9]), 10, 'train')
  with pytest.raises(loader.DatasetError, match=r'test label 10 at index 1 is outside the 10 '):
    experiment.check_labels(np.array([0, 10]), 10, 'test')
  with pytest.raises(loader.DatasetError, match='integer class ids'):
    experiment.check_labels(np.array([0.0, 1.0]), 10, 'train')


def test_fd_floor_images_are_held_out_from_the_scorers_training(tmp_path):
  """The floor is real images the scorer never trained on (the split's last scorer_holdout),
  as many as a sampler draws; the backbone still trains on every training image."""
  config = digits.get_config('tiny')
  data = experiment.prepare_data(config, str(tmp_path))
  train = loader.load('digits', 'train')
  assert len(data.floor_images) == config.scorer_holdout == 40
  assert len(data.scorer_images) + len(data.floor_images) == len(train['label'])
  np.testing.assert_array_equal(data.floor_images,
                                data.tokenizer.decode(data.tokenizer.encode(train['inputs'][-40:])))
  np.testing.assert_array_equal(data.floor_labels, train['label'][-40:])
  # No floor image is among the scorer's training images.
  seen = {img.tobytes() for img in data.scorer_images}
  assert not any(img.tobytes() in seen for img in data.floor_images)
  assert len(data.train_tokens) == len(train['label'])
  with config.unlocked():
    config.scorer_holdout = len(train['label'])
  with pytest.raises(config_lib.ConfigError, match=r'scorer_holdout=1497: .* has 1497 images'):
    experiment.prepare_data(config, str(tmp_path))

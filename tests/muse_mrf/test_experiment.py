"""The muse_mrf experiment end to end on its tiny variant, and its config checks before compute."""

import json
import os

import numpy as np
import pytest

from common import config_lib
from common import report
from common.data import loader
from configs.muse_mrf import digits
from muse_mrf import experiment
from muse_mrf import scoring


def test_tiny_experiment_writes_summary_with_stated_checks(tmp_path):
  """The paper's one end-to-end run in the default suite (~35 compiled programs, ~1 CPU-min)."""
  config = digits.get_config('tiny')
  summary = experiment.run(config, str(tmp_path))
  on_disk = json.loads((tmp_path / 'summary.json').read_text())
  assert on_disk['name'] == 'muse_mrf'
  assert on_disk['verdict'] in ('reproduced', 'not reproduced', 'inconclusive')
  rows = on_disk['numbers']['samplers']
  assert set(rows) == {'maskgit_T4', 'maskgit_T8', 'mrf_T4', 'unary_scale_only_T4'}
  assert rows['maskgit_T8']['backbone_calls'] == 8 and rows['mrf_T4']['backbone_calls'] == 4
  for row in rows.values():
    assert 0.0 <= row['accuracy'] <= 1.0 and row['fd'] >= -1e-6 and row['seconds'] > 0
  real = on_disk['numbers']['real_images']   # the floor: 40 held-out digits the scorer never saw
  assert real['images'] == config.scorer_holdout == 40 and real['fd'] >= -1e-6
  for row in rows.values():   # two sampler seeds each: the intervals' samples
    assert len(row['fd_per_seed']) == len(row['accuracy_per_seed']) == 2
  checks = on_disk['checks']
  names = [c['name'] for c in checks]
  assert len(names) == 7 and any('backbone calls' in n for n in names)
  assert all(c['state'] in ('holds', 'fails', 'inconclusive') for c in checks)
  deciding = [c for c in checks if not c['informational']]
  assert len(deciding) == 5
  assert not [c['name'] for c in deciding if c['evidence'] == 'single value']
  assert {c['evidence'] for c in deciding} == {'interval', 'exact'}
  assert on_disk['verdict'] == report.verdict(checks)
  titles = [t['title'] for t in on_disk['tables']]
  assert any(t.startswith('Diagnosis: the few-step gap on the 8 x 8 token grid') for t in titles)
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
    ('checks.calls_ratio', 0.0, r'checks.calls_ratio=0.0'),
    ('checks.acc_margin', float('inf'), r'checks.acc_margin=inf'),
    ('checks.wall_ratio', -1.0, r'checks.wall_ratio=-1.0'),
    ('checks.reference_steps', 6, r'checks compare plain T = 6'),
    ('sampling.seeds', 1, r'sampling.seeds=1: expected a whole number >= 2'),
    ('upsample', 0, r'upsample=0: expected a whole number >= 1'),
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


def _rows(fd, acc, seeds=5, calls=None):
  """Synthetic sampler rows: name -> (per-seed FD, per-seed accuracy) around the given means."""
  wiggle = np.linspace(-0.01, 0.01, seeds)
  calls = calls or {'maskgit_T8': 8, 'maskgit_T4': 4, 'mrf_T4': 4, 'unary_scale_only_T4': 4}
  return {n: {'backbone_calls': calls[n], 'fd_per_seed': list(fd[n] + wiggle),
              'accuracy_per_seed': list(acc[n] + wiggle), 'seconds_per_seed': [1.0] * seeds}
          for n in fd}


def _states(checks):
  return {c['name']: (c['state'], c['reason']) for c in checks}


def test_checks_are_decided_by_intervals_over_sampler_seeds():
  """Where plain T=4 loses to T=8 and the MRF closes the gap, every deciding check holds; where
  the MRF is worse than plain T=4 the 'clearly better' check fails."""
  config = digits.get_config('cpu')
  acc = {'maskgit_T8': 0.95, 'maskgit_T4': 0.85, 'mrf_T4': 0.94, 'unary_scale_only_T4': 0.86}
  fd = {'maskgit_T8': 1.5, 'maskgit_T4': 3.0, 'mrf_T4': 1.6, 'unary_scale_only_T4': 2.9}
  checks = scoring.make_checks(config, _rows(fd, acc), floor_fd=1.0)
  deciding = [c for c in checks if not c['informational']]
  assert [c['state'] for c in deciding] == ['holds'] * 5
  assert all(c['interval'] is not None for c in deciding if c['evidence'] == 'interval')
  assert report.verdict(checks) == 'reproduced'
  fd['mrf_T4'] = 3.5   # the MRF raises FD above plain T=4's
  states = _states(scoring.make_checks(config, _rows(fd, acc), floor_fd=1.0))
  assert states['MRF T=4 FD above the floor / plain T=4\'s'][0] == 'fails'
  assert states['MRF T=4 FD above the floor / plain T=8\'s'][0] == 'fails'


def test_checks_against_plain_few_steps_are_inconclusive_without_a_few_step_gap():
  """With plain T=4 as good as T=8 (the digits' 8 x 8 grid) there is nothing for the MRF to
  close: 'clearly better than plain T=4' is inconclusive, with that reason, not failed."""
  config = digits.get_config('cpu')
  acc = {'maskgit_T8': 0.99, 'maskgit_T4': 0.99, 'mrf_T4': 0.98, 'unary_scale_only_T4': 0.98}
  fd = {'maskgit_T8': 2.0, 'maskgit_T4': 1.4, 'mrf_T4': 1.6, 'unary_scale_only_T4': 1.3}
  states = _states(scoring.make_checks(config, _rows(fd, acc), floor_fd=1.0))
  state, reason = states['MRF T=4 FD above the floor / plain T=4\'s']
  assert state == 'inconclusive' and reason.startswith('no few-step gap: plain T=4 FD')
  state, reason = states['MRF T=4 class accuracy minus plain T=4']
  assert state == 'inconclusive' and 'no few-step gap' in reason
  below = {**fd, 'maskgit_T4': 1.3, 'maskgit_T8': 0.99}   # T=8 below the floor: no excess
  states = _states(scoring.make_checks(config, _rows(below, acc), floor_fd=1.0))
  state, reason = states['MRF T=4 FD above the floor / plain T=8\'s']
  assert state == 'inconclusive' and 'at the FD floor' in reason
  table = scoring.diagnosis_table(config, _rows(fd, acc), 1.0, (8, 8), 8)
  reads = {r[0]: r[3] for r in table['rows']}
  assert reads['FD: plain T=4 minus plain T=8 (the few-step gap)'] == 'T=4 better'
  assert reads['FD: MRF T=4 minus the layer with its pairwise term zeroed'] == (
      'the pairwise term raises FD')


def test_fd_ratio_check_is_inconclusive_when_the_reference_is_at_the_floor():
  config = digits.get_config('cpu')
  acc = {'maskgit_T8': 0.99, 'maskgit_T4': 0.9, 'mrf_T4': 0.98, 'unary_scale_only_T4': 0.98}
  fd = {'maskgit_T8': 0.995, 'maskgit_T4': 2.0, 'mrf_T4': 1.2, 'unary_scale_only_T4': 1.9}
  states = _states(scoring.make_checks(config, _rows(fd, acc), floor_fd=1.0))
  state, reason = states['MRF T=4 FD above the floor / plain T=8\'s']
  assert state == 'inconclusive' and reason


def test_diagnosis_reads_the_gap_and_the_mrf_at_every_t_with_both_samplers():
  """T = 2 (plain and MRF in the cpu grid) gets its own rows: where plain T=2 loses accuracy
  against T=8 and the MRF recovers it, the table says so."""
  config = digits.get_config('cpu')
  acc = {'maskgit_T8': 0.985, 'maskgit_T4': 0.98, 'mrf_T4': 0.98, 'unary_scale_only_T4': 0.97,
         'maskgit_T2': 0.95, 'mrf_T2': 0.975}
  fd = {'maskgit_T8': 2.0, 'maskgit_T4': 1.4, 'mrf_T4': 1.6, 'unary_scale_only_T4': 1.3,
        'maskgit_T2': 1.6, 'mrf_T2': 1.5}
  calls = {'maskgit_T8': 8, 'maskgit_T4': 4, 'mrf_T4': 4, 'unary_scale_only_T4': 4,
           'maskgit_T2': 2, 'mrf_T2': 2}
  table = scoring.diagnosis_table(config, _rows(fd, acc, calls=calls), 1.0, (8, 8), 8)
  reads = {r[0]: r[3] for r in table['rows']}
  assert reads['class accuracy: plain T=8 minus plain T=2'] == 'T=2 loses accuracy'
  assert reads['class accuracy: MRF T=2 minus plain T=2'] == 'the MRF raises accuracy'
  assert not any('T=6' in r[0] for r in table['rows'])   # no MRF T=6 rows without plain T=6


def test_upsampled_digits_keep_their_values_on_a_finer_grid():
  images = loader.load('digits', 'test')['inputs'][:3]
  up = experiment.upsample_images(images, 2)
  assert up.shape == (3, 16, 16, 1) and up.dtype == np.float32
  assert up.min() >= images.min() and up.max() <= images.max()   # interpolation, no overshoot
  # Bilinear at pixel centres: a ramp stays a ramp (edges clamped), along either axis.
  ramp = np.broadcast_to(np.arange(8, dtype=np.float32)[None, :, None, None], (1, 8, 8, 1))
  expected = np.clip((np.arange(16) + 0.5) / 2 - 0.5, 0, 7)
  np.testing.assert_allclose(experiment.upsample_images(ramp, 2)[0, :, 5, 0], expected)
  np.testing.assert_allclose(
      experiment.upsample_images(np.swapaxes(ramp, 1, 2), 2)[0, 5, :, 0], expected)
  np.testing.assert_array_equal(experiment.upsample_images(images, 1), images)
  flat = np.full((1, 4, 4, 1), 0.3, np.float32)
  np.testing.assert_allclose(experiment.upsample_images(flat, 3), 0.3, rtol=1e-6)

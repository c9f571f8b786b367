"""The tiny config end to end, the saved arrays, bad input before compute, every variant builds."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common import config_lib
from common import models
from common.data import loader
from configs.common import loop as loop_config
from configs.memorisation import sweep
from memorisation import experiment
from memorisation import scores
from memorisation import study


def _tiny():
  config = sweep.get_config('tiny')
  with config.unlocked():
    ds = config.datasets.digits
    ds.sizes = ((4,), (32,))
    ds.loop.total_epochs = 8.0
    ds.holdout_epochs = 1.0
    config.distill.student_sizes = (0,)
    config.distill.teacher_size = 1
    config.trajectory.bootstrap = 50
    config.trajectory.model_bootstrap = 5
  return config


def test_tiny_end_to_end_with_saved_arrays(tmp_path):
  config = _tiny()
  summary = experiment.run(config, str(tmp_path))
  names = [c['name'] for c in summary['checks']]
  assert 'digits/increasing_fraction_above_null' in names
  assert 'digits/distillation_test_accuracy' in names
  # Every check carries a state, decided by an interval or a null, never a single value.
  for c in summary['checks']:
    assert c['state'] in ('holds', 'fails', 'inconclusive') and c['compare'], c
    assert c['evidence'] in ('interval', 'null') and c['interval'], c
  assert {c['evidence'] for c in summary['checks'] if 'fraction_above_null' in c['name']} == {
      'null'}
  assert summary['verdict'] in ('reproduced', 'not reproduced', 'inconclusive')
  diagnosis = [t for t in summary['tables'] if t['title'].startswith('Diagnosis: ')]
  assert len(diagnosis) == 1
  quantities = [r[2] for r in diagnosis[0]['rows']]
  assert any('p(flipped label)' in q for q in quantities)
  assert diagnosis[0]['columns'] == experiment.DIAGNOSIS_COLUMNS
  assert any('regression to the mean' in q for q in quantities)
  nb = summary['numbers']['digits']
  assert len(nb['per_size']) == 2 and nb['num_mislabelled'] == 75
  assert sum(nb['class_fraction'].values()) == pytest.approx(1.0)
  assert set(nb['proxy_corr_by_size']) == set(study.PROXIES)
  assert all(os.path.exists(tmp_path / f) for f in summary['figures'])
  # Any score can be recomputed from the saved masks and correctness.
  masks = np.load(tmp_path / 'digits' / 'masks.npz')['masks']
  saved = np.load(tmp_path / 'digits' / 'trajectories.npz')
  for j in range(2):
    correct = np.load(tmp_path / 'digits' / f'size_{j}' / 'arrays.npz')['correct_train']
    assert correct.dtype == bool and correct.shape == masks.shape
    np.testing.assert_allclose(scores.memorisation(masks, correct).mem, saved['mem'][j])
  assert json.loads((tmp_path / 'summary.json').read_text())['name'] == 'memorisation'


def test_bad_input_fails_before_any_training(tmp_path):
  # The config's own fields are refused by check_config (tests/memorisation/test_config_checks.py)
  # before the workdir exists; what depends on the data (K too small for N) before the first size.
  config = _tiny()
  with config.unlocked():
    config.fraction = 1.0
  with pytest.raises(config_lib.ConfigError, match=r'^fraction=1\.0'):
    experiment.run(config, str(tmp_path / 'a'))
  config = _tiny()
  with config.unlocked():
    config.num_models = 8
  with pytest.raises(scores.MemorisationInputError, match='too few: .* examples are in no '
                                                          'subset'):
    experiment.run(config, str(tmp_path / 'b'))
  config = _tiny()
  with config.unlocked():
    config.datasets.digits.label_noise = 1.5
  with pytest.raises(config_lib.ConfigError, match=r'datasets\.digits\.label_noise=1\.5'):
    experiment.run(config, str(tmp_path / 'c'))
  assert not os.path.exists(tmp_path / 'a')
  assert not os.path.exists(tmp_path / 'b' / 'digits' / 'size_0')


def test_flipped_labels_move_to_another_class():
  labels = np.arange(1000) % 10
  noisy, flipped = study.flip_labels(labels, 0.05, 10, seed=0)
  assert flipped.sum() == 50 and np.all(noisy[flipped] != labels[flipped])
  np.testing.assert_array_equal(noisy[~flipped], labels[~flipped])


@pytest.mark.parametrize('variant', sweep.VARIANTS)
def test_every_variant_builds(variant):
  config = sweep.get_config(variant)
  assert config.is_locked
  for name in config.dataset_names:
    ds = config.datasets[name]
    config_lib.check_fields(ds.loop, loop_config.get_config())
    config_lib.check_loop(ds.loop)
    assert ds.dataset in loader.NUM_CLASSES and ds.sizes
    shape = tuple(ds.image_shape) or loader.INPUT_SHAPES[ds.dataset]
    if len(shape) == 2:
      shape += (1,)
    for j in (0, len(ds.sizes) - 1):
      model = models.build(study.size_model(ds, ds.sizes[j]), loader.NUM_CLASSES[ds.dataset])
      out = jax.eval_shape(lambda m=model: m.init(jax.random.key(0), jnp.zeros((2,) + shape)))
      assert jax.tree.leaves(out)
    assert all(0 <= j < len(ds.sizes) for j in config.distill.student_sizes)
  assert 0 < config.fraction < 1 and (config.num_models + config.num_full_models) % 8 == 0

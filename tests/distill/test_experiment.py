"""The experiment end to end (tiny variant), its configs' models, and config errors."""

import importlib
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import distill
from common import config_lib
from common import models
from common import report
from common.data import loader
from configs.distill import mnist1d as distill_config
from distill import experiment


@pytest.mark.parametrize('variant', distill_config.VARIANTS)
def test_every_variant_builds_its_models_and_regimes(variant):
  config = distill_config.get_config(variant)
  assert set(config.deviation_regimes) <= set(config.regime_names)
  for name in config.regime_names:
    ds = config.datasets[config.regimes[name].data]
    assert ds.dataset in loader.NUM_CLASSES
    model = models.build(ds.model, loader.NUM_CLASSES[ds.dataset])
    shape = (2,) + loader.INPUT_SHAPES[ds.dataset]
    out = jax.eval_shape(lambda m=model, s=shape: m.init(jax.random.key(0), jnp.zeros(s)))
    assert jax.tree.leaves(out)
    distill.augment_fn(ds.augment)
  assert importlib.import_module('distill.main')  # the absl binary imports


def test_tiny_config_runs_end_to_end(tmp_path):
  config = distill_config.get_config('tiny')
  config.loop.num_devices = 1  # one device: the test's 8 fake devices only slow a tiny run
  summary = experiment.run(config, str(tmp_path))
  on_disk = json.loads((tmp_path / 'summary.json').read_text())
  assert on_disk['name'] == 'distill' and on_disk['reproduced'] == summary['reproduced']
  numbers = summary['numbers']
  row = numbers['regimes']['digits']
  assert set(row['test_accuracy']) == set(experiment.ROLES)
  for role in experiment.ROLES:
    assert 0.3 < row['test_accuracy'][role]['mean'] <= 1.0  # every model learnt something
  dev = row['deviations']['distilled/train/label']
  assert sum(dev['bin_counts']) == 2 * 1497  # both seeds' training sets, pooled
  assert dev['agreement'] > 0.6
  # Distilled students agree with their teachers more than independently trained ones do.
  assert dev['kl_teacher_student'] < row['deviations']['onehot/train/label']['kl_teacher_student']
  assert 'checks' not in numbers  # the checks are the summary's rows, one value each
  checks = {c['name']: c for c in summary['checks']}
  for c in checks.values():
    assert c['state'] in report.STATES and c['compare'] in report.COMPARISONS, c
    assert not isinstance(c['value'], (dict, list)), c
    if not c['informational']:
      assert c['evidence'] != 'single value', c['name']  # intervals over seeds decide
  assert summary['verdict'] == report.verdict(summary['checks'])
  assert checks['eigenspace/student_minus_teacher_test_mse']['state'] == report.HOLDS
  assert {'exaggeration/digits/vs_control/excess_where_unsure',
          'exaggeration/digits/vs_reference/log_odds_slope',
          'distillation_gain/digits'} <= set(checks)
  assert ('late_switch_recovers_gain' in checks) != ('late_switch_recovers_gain/digits' in checks)
  per_seed = numbers['exaggeration']['digits']['train']['excess_where_unsure']
  assert len(per_seed) == config.seeds
  assert checks['exaggeration/digits/vs_control/excess_where_unsure']['value'] == \
      pytest.approx(np.mean(per_seed))
  diagnosis = [t for t in summary['tables'] if t['title'].startswith('Diagnosis: ')]
  assert len(diagnosis) == 1 and [r[:2] for r in diagnosis[0]['rows']] == [
      ['digits', 'train'], ['digits', 'test']]
  assert all(os.path.exists(tmp_path / f) for f in summary['figures'])
  assert len(summary['figures']) == 3


def test_bad_experiment_configs_fail_before_training(tmp_path):
  config = distill_config.get_config('tiny')
  config.regime_names = ('digits', 'digts')
  with pytest.raises(config_lib.ConfigError, match='did you mean'):
    experiment.run(config, str(tmp_path))
  config = distill_config.get_config('tiny')
  config.tau = 0.0
  with pytest.raises(config_lib.ConfigError, match='tau=0.0: tau must be'):
    experiment.run(config, str(tmp_path))
  config = distill_config.get_config('tiny')
  config.alpha = 1.5
  with pytest.raises(config_lib.ConfigError, match='alpha=1.5: alpha must'):
    experiment.run(config, str(tmp_path))
  assert not os.path.exists(tmp_path / 'models')

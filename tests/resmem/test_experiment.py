"""The stylised regression and the experiment end to end (tiny variant), plus config errors."""

import json
import os

import numpy as np
import pytest

import resmem
from common import config_lib
from common import report
from configs.resmem import mnist1d as resmem_config
from resmem import experiment
from resmem import regression


def test_constrained_least_squares_meets_its_constraint():
  rng = np.random.default_rng(0)
  x = rng.uniform(-1, 1, (500, 3))
  y = x @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.normal(size=500)
  free = regression.constrained_least_squares(x, y, 10.0)
  np.testing.assert_allclose(free, np.linalg.lstsq(x, y, rcond=None)[0])
  b = regression.constrained_least_squares(x, y, 1.0)
  assert np.linalg.norm(b) == pytest.approx(1.0, abs=1e-6)
  # Optimal on the sphere: the gradient of the loss points along -b (KKT).
  grad = x.T @ (x @ b - y)
  cos = -grad @ b / (np.linalg.norm(grad) * np.linalg.norm(b))
  assert cos == pytest.approx(1.0, abs=1e-6)


def test_resmem_corrects_a_capacity_limited_base():
  problem = regression.Problem(dim=2)
  base, res, k = regression.excess_risks(problem, 5000, test_size=2000, k_exponent=0.4, seed=0)
  assert k == round(5000 ** 0.4)
  assert base > 0.05 and res < base / 20


def test_tiny_config_runs_end_to_end(tmp_path):
  config = resmem_config.get_config('tiny')
  summary = experiment.run(config, str(tmp_path))
  on_disk = json.loads((tmp_path / 'summary.json').read_text())
  assert on_disk['reproduced'] == summary['reproduced'] and on_disk['name'] == 'resmem'
  assert summary['checks'] and summary['tables'] and all(t['rows'] for t in summary['tables'])
  assert summary['reproduced'] == report.verdict_from(summary['checks'])
  table = summary['numbers']['classification']['digits']
  assert set(table) == {'mlp4', 'mlp256x2'}
  for row in table.values():
    assert 0 < row['base'] <= 1 and 0 < row['resmem'] <= 1 and 0 < row['knn'] <= 1
  checks = summary['checks']
  assert all(c['state'] in report.STATES for c in checks)
  deciding = [c for c in checks if not c['informational']]
  assert deciding and all(c['evidence'] == 'interval' and c['compare'] for c in deciding)
  assert not any('grows with the training set' in c['name'] for c in checks)  # one size here
  slope = next(c for c in checks if c['name'].startswith('Regression d=2: ResMem'))
  assert slope['state'] == 'holds' and slope['interval'][1] < 0
  assert any(t['title'].startswith('Diagnosis: the interpolating bases') for t in summary['tables'])
  # The weak base (4 hidden units) cannot fit digits, and its residuals carry the rest.
  assert table['mlp4']['train_accuracy'] < 0.9
  assert table['mlp4']['resmem'] > table['mlp4']['base'] + 0.02
  assert all(os.path.exists(tmp_path / f) for f in summary['figures'])
  memory = resmem.Memory.load(str(tmp_path / 'models/digits/mlp4/seed0/memory.npz'))
  assert memory.keys.shape == (1272, 4) and memory.residuals.shape == (1272, 10)


def test_unknown_model_or_dataset_is_named(tmp_path):
  config = resmem_config.get_config('tiny')
  config.dataset_models.digits = ('mlp4', 'mlp5')
  with pytest.raises(config_lib.ConfigError, match='mlp5'):
    experiment.run(config, str(tmp_path))


def _seeds_row(train, base, resmem, resmem_t1=None, knn=None):
  """A hand-made (dataset, model) row over seeds, as experiment._row builds it."""
  per_seed = {'train_accuracy': train, 'base': base, 'resmem': resmem,
              'resmem_t1': resmem_t1 or base, 'knn': knn or base}
  return {**{k: float(np.mean(v)) for k, v in per_seed.items()}, 'per_seed': per_seed,
          'resmem_params': [{'temperature': 1.0}] * len(base)}


def test_classification_checks_are_decided_by_the_interval_over_seeds_not_the_mean():
  config = resmem_config.get_config('tiny')
  table = {'d': {
      # Gains 0.05, 0.06, 0.04: the interval clears 0.
      'clear': _seeds_row([0.7] * 3, [0.50, 0.50, 0.50], [0.55, 0.56, 0.54]),
      # Mean gain +0.01 but one seed loses: the old `every mean gain > 0` held; now inconclusive.
      'noisy': _seeds_row([0.7] * 3, [0.50, 0.50, 0.50], [0.53, 0.52, 0.48]),
      # Interpolates, gains 0.03 +- 0.003: beyond the 0.01 margin on every seed: fails.
      'fits': _seeds_row([1.0] * 3, [0.60, 0.60, 0.60], [0.63, 0.633, 0.627])}}
  checks, _ = experiment.classification_checks(config, table)
  state = {c['name'].split('(')[1].split(';')[0]: c['state'] for c in checks
           if not c['informational']}
  assert state == {'d/clear': 'holds', 'd/noisy': 'inconclusive', 'd/fits': 'fails'}
  assert report.verdict(checks) == 'not reproduced'


def test_regression_checks_read_the_slope_and_flatness_per_seed():
  config = resmem_config.get_config('tiny')
  per_n = {n: {'base_seeds': [0.08, 0.085], 'resmem_seeds': [1.0 / n, 1.2 / n]}
           for n in (100, 1_000, 10_000)}
  slope, flat = experiment.regression_checks(config, {2: per_n})
  assert slope['state'] == 'holds' and slope['value'] == pytest.approx(-1.0)
  assert flat['state'] == 'holds' and flat['value'] == pytest.approx(1.0)
  per_n[10_000]['base_seeds'] = [0.2, 0.21]  # the base's risk grows 2.5x: not flat
  assert experiment.regression_checks(config, {2: per_n})[1]['state'] == 'fails'

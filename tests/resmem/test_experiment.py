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
  checks = summary['numbers']['checks']
  assert 'gain_grows_with_data' not in checks  # one training-set size in this variant
  assert checks['regression']['d2']['holds']
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

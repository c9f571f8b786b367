"""The muse_mrf experiment end to end on its tiny variant, and its config checks before compute."""

import json
import os

import numpy as np
import pytest

from common import config_lib
from configs.muse_mrf import digits
from muse_mrf import experiment
from muse_mrf import maskgit


@pytest.mark.slow
def test_tiny_experiment_writes_summary_with_stated_checks(tmp_path):
  config = digits.get_config('tiny')
  summary = experiment.run(config, str(tmp_path))
  on_disk = json.loads((tmp_path / 'summary.json').read_text())
  assert on_disk['name'] == 'muse_mrf' and isinstance(on_disk['reproduced'], bool)
  rows = on_disk['numbers']['samplers']
  assert set(rows) == {'maskgit_T4', 'maskgit_T8', 'mrf_T4', 'unary_scale_only_T4'}
  assert rows['maskgit_T8']['backbone_calls'] == 8 and rows['mrf_T4']['backbone_calls'] == 4
  for row in rows.values():
    assert 0.0 <= row['accuracy'] <= 1.0 and row['fd'] >= -1e-6 and row['seconds'] > 0
  names = [c['name'] for c in on_disk['checks']]
  assert len(names) == 7 and any('backbone calls' in n for n in names)
  deciding = [c for c in on_disk['checks'] if not c['informational']]
  assert on_disk['reproduced'] == all(c['holds'] for c in deciding)
  assert all(os.path.exists(tmp_path / f) for f in on_disk['figures'])
  assert summary['reproduced'] == on_disk['reproduced']
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


@pytest.mark.parametrize('field,value,error,match', [
    ('tokenizer.kind', 'pixels', config_lib.ConfigError, 'grey'),
    ('mask_schedule', 'cubic', config_lib.ConfigError, 'mask_schedule'),
    ('sampling.plain_steps', (0, 8), maskgit.DecodingError, 'T=0'),
    ('sampling.mrf_steps', (2,), config_lib.ConfigError, 'must hold them'),
    ('mrf_r_range', (0.9, 0.5), config_lib.ConfigError, 'mrf_r_range'),
    ('backbone.batch_size', 0, config_lib.ConfigError, 'batch_size'),
])
def test_bad_config_fails_before_compute(tmp_path, field, value, error, match):
  config = digits.get_config('tiny')
  section, _, key = field.rpartition('.')
  target = config[section] if section else config
  with target.unlocked():
    target[key] = value
  with pytest.raises(error, match=match):
    experiment.run(config, str(tmp_path))
  assert not os.path.exists(tmp_path / 'backbone')

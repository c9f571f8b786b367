"""The pause experiment end to end on its tiny variant, and its config checks before compute."""

import json
import os

import pytest

from common import config_lib
from configs.pause import lm as pause_config
from pause import experiment
from pause import pausing


def test_tiny_experiment_writes_summary_with_stated_checks(tmp_path):
  config = pause_config.get_config('tiny')
  summary = experiment.run(config, str(tmp_path))
  on_disk = json.loads((tmp_path / 'summary.json').read_text())
  assert on_disk['name'] == 'pause' and isinstance(on_disk['reproduced'], bool)
  numbers = on_disk['numbers']
  assert set(numbers['exact_match']) == {'StdPT_StdFT', 'StdPT_PauseFT', 'PausePT_StdFT',
                                         'PausePT_PauseFT', 'StdPT_FillerFT'}
  for row in numbers['exact_match'].values():
    for task in config.tasks:
      assert len(row[task]['seeds']) == config.seeds
      assert all(0.0 <= x <= 1.0 for x in row[task]['seeds'])
  assert set(numbers['minf_on_PausePT_PauseFT']) == {'0', '2', '4'}
  names = [c['name'] for c in numbers['checks']]
  assert len(names) == 5 and any('M_inf = 0' in n for n in names)
  for check in numbers['checks']:
    assert set(check) == {'name', 'value', 'threshold', 'holds'}
  assert on_disk['reproduced'] == all(c['holds'] for c in numbers['checks'])
  assert all(os.path.exists(tmp_path / f) for f in on_disk['figures'])
  assert summary['reproduced'] == on_disk['reproduced']


@pytest.mark.parametrize('field,value,error,match', [
    ('num_pauses', -1, pausing.PauseError, 'negative'),
    ('num_pauses', 40, pausing.PauseError, 'do not fit'),
    ('minf_grid', (0, 99), pausing.PauseError, 'M_inf'),
    ('pretrain_pause_fraction', 1.0, pausing.PauseError, 'fraction'),
    ('pause_positions', 'sometimes', config_lib.ConfigError, 'distinct'),
    ('tasks', ('add', 'multiply'), config_lib.ConfigError, 'multiply'),
    ('seeds', 5, config_lib.ConfigError, 'one model per seed'),
    ('ablations', ('append',), config_lib.ConfigError, 'prepend'),
])
def test_bad_config_fails_before_compute(tmp_path, field, value, error, match):
  config = pause_config.get_config('tiny')
  with config.unlocked():
    config[field] = value
  with pytest.raises(error, match=match):
    experiment.run(config, str(tmp_path))
  assert not os.path.exists(tmp_path / 'pretrain')

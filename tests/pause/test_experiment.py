"""The pause experiment end to end on its tiny variant (bad configs: test_inputs.py)."""

import json
import os

from configs.pause import lm as pause_config
from pause import experiment


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

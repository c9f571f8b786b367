"""The pause experiment end to end on its tiny variant (bad configs: test_inputs.py)."""

import json
import os

import pytest

from configs.pause import lm as pause_config
from pause import experiment


def test_tiny_experiment_writes_summary_with_interval_checks_and_diagnosis(tmp_path):
  config = pause_config.get_config('tiny')
  summary = experiment.run(config, str(tmp_path))
  on_disk = json.loads((tmp_path / 'summary.json').read_text())
  assert on_disk['name'] == 'pause'
  numbers = on_disk['numbers']
  assert set(numbers['exact_match']) == {
      'StdPT_StdFT', 'StdPT_PauseFT', 'PausePT_StdFT', 'PausePT_PauseFT', 'StdPT_FillerFT',
      'StdPT_PauseFT_meaninit', 'StdPT_PauseFT_frozen'}
  for row in numbers['exact_match'].values():
    for task in config.tasks:
      assert len(row[task]['seeds']) == config.seeds
      assert all(0.0 <= x <= 1.0 for x in row[task]['seeds'])
  assert set(numbers['minf_on_PausePT_PauseFT']) == {'0', '2', '4'}
  assert 'checks' not in numbers                      # one check list: the summary's
  checks = on_disk['checks']
  deciding = [c for c in checks if not c['informational']]
  assert len(deciding) == 5 and any('M_inf = 0' in c['name'] for c in deciding)
  for check in checks:
    assert check['state'] in ('holds', 'fails', 'inconclusive')
    assert check['compare'] in ('>', '>=', '<=', 'in')
  assert all(c['evidence'] == 'interval' and c['interval'] for c in deciding)
  assert on_disk['verdict'] in ('reproduced', 'not reproduced', 'inconclusive')
  # The diagnosis: a table in the summary, every diagnosed arm measured per seed.
  titles = [t['title'] for t in on_disk['tables']]
  assert any(t.startswith('Diagnosis: ') for t in titles)
  diag = numbers['diagnosis']
  for arm in ('StdPT_PauseFT', 'StdPT_PauseFT_meaninit', 'StdPT_PauseFT_frozen',
              'PausePT_PauseFT'):
    assert len(diag[arm]['attention_on_pauses']) == config.seeds
    assert len(diag[arm]['minus_baseline']) == config.seeds
  # Mean init starts the pause at the mean byte embedding (shorter than a byte's); frozen keeps
  # the standard model's untrained draw, so its norm ratio is the pretrained model's.
  start = diag['StdPT before fine-tuning']['embedding_norm_ratio'][0]
  assert diag['StdPT_PauseFT_frozen']['embedding_norm_ratio'] == pytest.approx(
      [start] * config.seeds, abs=1e-3)
  assert all(os.path.exists(tmp_path / f) for f in on_disk['figures'])
  assert summary['verdict'] == on_disk['verdict']


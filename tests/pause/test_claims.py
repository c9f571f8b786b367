"""The pause checks: per-seed paired differences, intervals, the floor (no training)."""

from configs.pause import lm as pause_config
from pause import claims

TASKS = ('count', 'count_long', 'add_2digit')


def _table(**settings):
  """{setting: {task: per-seed values}} with every task given the same per-seed values."""
  return {name: {t: list(values) for t in TASKS} for name, values in settings.items()}


def _checks(table, minf=None):
  config = pause_config.get_config('cpu')
  out = {}
  for c in claims.check_claims(config, table, minf or {}):
    key = 'recovery' if 'recovers' in c['name'] else c['name'].split(',')[0].split(': exact')[0]
    assert key not in out, key
    out[key] = c
  return out


def test_near_zero_exact_match_everywhere_is_inconclusive_not_about_the_baseline():
  # Was: "about the baseline" and "filler gives nothing" held when every arm sat near zero.
  table = _table(StdPT_StdFT=[0.01, 0.0, 0.02], StdPT_PauseFT=[0.0, 0.01, 0.01],
                 StdPT_FillerFT=[0.0, 0.0, 0.01], PausePT_PauseFT=[0.02, 0.01, 0.0])
  checks = _checks(table)
  for name in ('StdPT_PauseFT minus StdPT_StdFT', "StdPT_FillerFT ('.' filler) minus StdPT_StdFT",
               'PausePT_PauseFT minus StdPT_StdFT'):
    assert checks[name]['state'] == 'inconclusive'
    assert 'both arms at the floor' in checks[name]['reason']


def test_differences_are_paired_by_seed():
  # Seeds vary widely but the gap is the same in each: the paired interval is tight and holds.
  table = _table(StdPT_StdFT=[0.2, 0.5, 0.8], PausePT_PauseFT=[0.3, 0.6, 0.9],
                 StdPT_PauseFT=[0.21, 0.49, 0.8])
  checks = _checks(table)
  beats = checks['PausePT_PauseFT minus StdPT_StdFT']
  assert beats['state'] == 'holds' and beats['value'] == 0.1
  assert beats['interval'][0] > 0.09
  assert checks['StdPT_PauseFT minus StdPT_StdFT']['state'] == 'holds'   # inside +-0.03


def test_noisy_gap_straddling_the_threshold_is_inconclusive_and_a_clear_one_fails():
  table = _table(StdPT_StdFT=[0.3, 0.3, 0.3], PausePT_PauseFT=[0.5, 0.2, 0.35],
                 StdPT_PauseFT=[0.1, 0.12, 0.11])
  checks = _checks(table)
  assert checks['PausePT_PauseFT minus StdPT_StdFT']['state'] == 'inconclusive'
  assert checks['StdPT_PauseFT minus StdPT_StdFT']['state'] == 'fails'


def test_minf_recovery_is_decided_per_seed_without_a_ratio():
  full = {t: [0.6, 0.7, 0.8] for t in TASKS}
  table = _table(StdPT_StdFT=[0.3, 0.3, 0.3], PausePT_PauseFT=[0.6, 0.7, 0.8])
  minf = {0: {t: [0.0, 0.05, 0.0] for t in TASKS}, 2: {t: [0.5, 0.6, 0.7] for t in TASKS},
          8: full}
  checks = _checks(table, minf)
  drop = checks['PausePT_PauseFT']
  assert 'M_inf = 0' in drop['name'] and drop['compare'] == '>=' and drop['state'] == 'holds'
  recover = checks['recovery']
  assert recover['state'] == 'holds' and recover['threshold'] == 0.0

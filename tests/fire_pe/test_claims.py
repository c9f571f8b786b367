"""The claim checks and the diagnosis, decided over seeds from per-seed evaluations (no training):
per-seed gaps to the best contender, paired differences, intervals, the diagnosis tables."""

import math

import pytest

from common import report
from configs.fire_pe import lm as lm_config
from fire_pe import claims
from fire_pe import diagnostics


def _config(**checks):
  config = lm_config.get_config('cpu')
  with config.unlocked():
    for key, value in checks.items():
      config.checks[key] = value
  return config


def _row(losses, frozen=None):
  """An evaluate() row with a second-half loss per factor (1, 2, 4, 8)."""
  return {f: {'second_half': v, 'all': v, 'buckets': {}, 'windows': 1}
          for f, v in zip((1, 2, 4, 8), losses)}


def _per_seed(fire_4x, others_4x):
  """Per-seed rows: fire's 4x loss per seed; others_4x {name: per-seed 4x losses}."""
  per_seed = {'fire': [_row([1.7, 1.8, v, 2.1]) for v in fire_4x]}
  for name, values in others_4x.items():
    per_seed[name] = [_row([1.8, 1.8, v, 1.8]) for v in values]
  return per_seed


def _by_name(rows):
  return {r['name']: r for r in rows}


def test_gap_is_taken_to_the_best_contender_of_each_seed_and_decided_by_its_interval():
  config = _config()
  per_seed = _per_seed([1.95, 1.94, 1.96], {
      'nope': [2.6, 2.7, 2.65], 'rope': [3.0, 3.3, 2.8], 'alibi': [1.98, 1.70, 1.97],
      'kerple_log': [1.79, 1.80, 1.78], 'kerple_power': [1.70, 1.72, 1.71]})
  gaps = claims.claim_gaps(config, per_seed, (4,))[4]
  assert gaps['best'] == ['kerple_power', 'alibi', 'kerple_power']   # chosen per seed
  assert gaps['gap'] == pytest.approx([0.25, 0.24, 0.25])
  assert gaps['below']['nope'] == pytest.approx([-0.65, -0.76, -0.69])
  rows = _by_name(claims.claim_checks(config, {4: gaps}))
  gap = rows['4x: fire minus the best contender, chosen per seed']
  assert (gap['compare'], gap['threshold'], gap['evidence']) == ('<=', 0.02, 'interval')
  iv = report.mean_interval([0.25, 0.24, 0.25])
  assert gap['interval'] == pytest.approx([iv['low'], iv['high']], abs=1e-4)
  assert gap['state'] == 'fails'                       # the whole interval is above the margin
  nope = rows['4x: fire minus nope (paired by seed)']
  assert (nope['compare'], nope['threshold'], nope['state']) == ('<', 0.0, 'holds')
  assert rows['4x: fire minus rope (paired by seed)']['state'] == 'holds'
  assert report.verdict(list(rows.values())) == 'not reproduced'


def test_fire_ahead_of_every_contender_holds_and_a_straddling_gap_is_inconclusive():
  config = _config()
  ahead = _per_seed([1.60, 1.62], {'nope': [2.6, 2.7], 'rope': [3.0, 3.1], 'alibi': [1.9, 1.9],
                                   'kerple_log': [1.8, 1.8], 'kerple_power': [1.70, 1.71]})
  rows = claims.claim_checks(config, claims.claim_gaps(config, ahead, (4,)))
  assert [r['state'] for r in rows] == ['holds', 'holds', 'holds']
  assert report.verdict(rows) == 'reproduced'
  # One seed within the margin, one far outside: the interval straddles it.
  straddle = _per_seed([1.71, 1.90], {'nope': [2.6, 2.7], 'rope': [3.0, 3.3],
                                      'alibi': [1.9, 1.9], 'kerple_log': [1.8, 1.8],
                                      'kerple_power': [1.70, 1.70]})
  gap = claims.claim_checks(config, claims.claim_gaps(config, straddle, (4,)))[0]
  assert gap['state'] == 'inconclusive' and 'straddles' in gap['reason']


def test_one_seed_never_decides_a_check():
  """The old check decided on one seed's difference; one seed now gives an unbounded interval."""
  config = _config()
  per_seed = _per_seed([1.95], {'nope': [2.6], 'rope': [3.0], 'alibi': [1.98],
                                'kerple_log': [1.79], 'kerple_power': [1.70]})
  rows = claims.claim_checks(config, claims.claim_gaps(config, per_seed, (4,)))
  assert len(rows) == 3
  for row in rows:
    assert row['state'] == 'inconclusive' and row['evidence'] == 'interval'
    assert row['interval'][0] == -math.inf or row['interval'][0] == '-inf'
  assert report.verdict(rows) == 'inconclusive'


def test_side_factors_are_informational_and_a_missing_contender_length_is_inconclusive():
  config = _config(contenders=('kerple_power',), below=('nope',))
  per_seed = _per_seed([1.95, 1.96], {'nope': [2.6, 2.7], 'kerple_power': [1.7, 1.7]})
  per_seed['kerple_power'] = [{**r, 4: 'not representable'} for r in per_seed['kerple_power']]
  rows = claims.claim_checks(config, claims.claim_gaps(config, per_seed, (4,)),
                             informational=True, label=' (side)')
  assert all(r['informational'] for r in rows)
  assert rows[0]['state'] == 'inconclusive'
  assert rows[0]['reason'] == 'no contender is representable at 4x'
  assert rows[1]['state'] == 'holds'


def test_diagnosis_table_reads_the_normaliser_off_paired_intervals():
  config = _config()
  per_seed = {
      'fire': [_row([1.70, 1.78, 1.94, 2.09]), _row([1.71, 1.79, 1.95, 2.11])],
      'fire' + diagnostics.FROZEN: [_row([1.70, 1.72, 1.73, 1.70]),
                                    _row([1.71, 1.73, 1.74, 1.70])],
      'kerple_power': [_row([1.68, 1.69, 1.70, 1.66]), _row([1.69, 1.70, 1.71, 1.67])],
  }
  layer = {'normaliser_scale': {'1': 1.0, '2': 0.84, '4': 0.72, '8': 0.64}}
  learned = {'fire': [{'layer_0': layer, 'layer_1': layer}] * 2}
  table = claims.diagnosis_table(config, per_seed, learned)
  assert table['title'].startswith('Diagnosis: ')
  assert table['columns'] == ['quantity', '2x (128)', '4x (256)', '8x (512)']
  rows = {r[0]: r[1:] for r in table['rows']}
  added = rows['fire minus fire with the normaliser frozen (what the growing normaliser adds)']
  assert added[1].startswith('0.210 [') and added[2].startswith('0.400 [')
  frozen_vs_best = rows['fire, normaliser frozen, minus the best contender (per seed)']
  assert frozen_vs_best[2].startswith('0.035 [')
  assert rows["fire: the last row's inputs shrunk to (learned, all layers and seeds)"] == [
      '0.84', '0.72', '0.64']
  assert claims.diagnosis_table(config, {'fire': per_seed['fire']}, {}) is None


def test_regime_table_and_trend_check():
  config = lm_config.get_config('study')
  def seeds(fire, kerple):
    return {'fire': [_row([1.7, 1.7, v, 2.0]) for v in fire],
            'fire' + diagnostics.FROZEN: [_row([1.7, 1.7, 1.74, 1.7]) for _ in fire],
            'kerple_log': [_row([1.8, 1.8, v, 1.8]) for v in kerple]}
  per_length = {64: seeds([1.95, 1.94, 1.96], [1.79, 1.78, 1.80]),
                128: seeds([1.87, 1.88], [1.77, 1.77]), 256: seeds([1.91, 1.92], [1.85, 1.85])}
  base = claims.regime_gaps(config, per_length)
  assert base[64][4]['best'] == ['kerple_log'] * 3
  check = claims.regime_check(config, base)
  assert check['informational'] and check['compare'] == '<'
  assert check['value'] == pytest.approx(0.065 - 0.16, abs=1e-3) and check['state'] == 'holds'
  table = claims.regime_table(config, per_length, {})
  assert table['title'].startswith('Diagnosis: the regime trend')
  assert [r[0] for r in table['rows']] == [64, 128, 256]
  assert table['rows'][0][2].startswith('0.160 [')

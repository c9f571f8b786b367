"""The claims checked (report.check rows, each deciding its own state from an interval over seeds)
and the diagnosis table, from the experiment's per-seed numbers alone (no training).

    checks = claims.make_checks(config, numbers)        # the summary's rows
    table = claims.diagnosis_table(config, numbers)     # 'Diagnosis: ...'
    report.verdict(checks)

numbers (experiment.run builds them):
  'eigenspace': {'per_seed': {'student_minus_teacher_mse', 'ratio_top', 'ratio_bottom': [...]}}
  'regimes': {name: {'paired': {'gain', 'late_gain': [...]}, 'student_length', ...}}
  'exaggeration': {name: {'train' | 'test': {stat: [one value per seed]}}}   (exaggeration.py)

Every threshold is a field of config.checks.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from common import report


def interval(values: Sequence[float]) -> dict[str, Any] | None:
  """report.mean_interval of per-seed values; None when one is missing (NaN) or there are none."""
  values = [float(v) for v in values]
  if not values or not all(math.isfinite(v) for v in values):
    return None
  return report.mean_interval(values)


def _row(name, values, *, compare, threshold, note, too_few: str = '', informational=False):
  """A check on the mean of per-seed `values` with their Student-t interval; `too_few`: a reason
  that leaves it inconclusive."""
  stats = interval(values)
  if stats is None:
    finite = [v for v in values if math.isfinite(float(v))]
    value = float(np.mean(finite)) if finite else float('nan')
    reason = too_few or f'{len(values) - len(finite)} of {len(values)} seeds have no value'
    # An interval over seeds is what would decide; without every seed's value it cannot.
    return report.check(name, value, compare=compare, threshold=threshold, inconclusive=reason,
                        evidence='interval', note=note, informational=informational)
  return report.check(name, stats['mean'], compare=compare, threshold=threshold,
                      interval=(stats['low'], stats['high']), inconclusive=too_few, note=note,
                      informational=informational)


# ---------------------------------------------------------------------------------------------
# Eigenspace: decided by what gradient descent produces (the student's test error against its
# teacher's), the coefficient ratios shown beside it. GD against its closed forms is a test.
# ---------------------------------------------------------------------------------------------
def eigenspace_checks(config, eigen: dict[str, Any]) -> list[dict[str, Any]]:
  c = config.checks
  seeds = eigen['per_seed']
  n = len(seeds['student_minus_teacher_mse'])
  rows = [_row('eigenspace/student_minus_teacher_test_mse', seeds['student_minus_teacher_mse'],
               compare='<', threshold=c.mse_difference_below,
               note=f'student - teacher test MSE (noiseless targets) of linear regression by '
               f'gradient descent, the student fitted to the teacher\'s training predictions; '
               f'{n} random problems')]
  f = f'{c.ratio_fraction:.0%}'
  rows.append(_row('eigenspace/ratio_top', seeds['ratio_top'], compare='>=',
                   threshold=c.ratio_top_min, informational=True,
                   note=f'mean a_S / a_T over the top {f} of eigendirections'))
  rows.append(_row('eigenspace/ratio_bottom', seeds['ratio_bottom'], compare='<=',
                   threshold=c.ratio_bottom_max, informational=True,
                   note=f'mean a_S / a_T over the bottom {f} (fixed by eta and T\': shown, not '
                   'deciding)'))
  return rows


# ---------------------------------------------------------------------------------------------
# Exaggeration: against the one-hot control binned the same way, and against an independent
# reference teacher (distill/exaggeration.py says why both).
# ---------------------------------------------------------------------------------------------
def _few_points(config, stats, key: str, where: str) -> str:
  counts = stats[key]
  low = min(counts) if counts else 0
  if low >= config.checks.min_points:
    return ''
  return (f'too few points: {low} (< {config.checks.min_points}) in a seed where {where}')


def exaggeration_checks(config, name: str, stats: dict[str, list]) -> list[dict[str, Any]]:
  """The deciding rows of one regime, on the training set: the card's three parts (below the
  teacher where it is unsure, not below where it is sure, log-odds slope), once against the
  one-hot control binned by p_T, once binned by an independent reference teacher R."""
  c = config.checks
  u, s = c.unsure_below, c.sure_from
  few = lambda key, where: _few_points(config, stats, key, where)
  control, reference = f'exaggeration/{name}/vs_control', f'exaggeration/{name}/vs_reference'
  return [
      _row(f'{control}/excess_where_unsure', stats['excess_where_unsure'], compare='<',
           threshold=0.0, too_few=few('points_unsure', f'p_T < {u}'),
           note=f'(p_S - p_T) - (p_O - p_T) = p_S - p_O where p_T < {u}: the distilled student '
           'against the one-hot control O, training set'),
      _row(f'{control}/excess_where_sure', stats['excess_where_sure'], compare='>=',
           threshold=-c.sure_tolerance, too_few=few('points_sure', f'p_T >= {s}'),
           note=f'p_S - p_O where p_T >= {s}, training set'),
      _row(f'{control}/excess_log_odds_slope', stats['excess_slope'], compare='>',
           threshold=c.excess_slope_above,
           note='slope of logit p_S on logit p_T minus the control\'s slope'),
      _row(f'{reference}/deviation_where_unsure', stats['deviation_where_reference_unsure'],
           compare='<', threshold=0.0, too_few=few('points_reference_unsure', f'p_R < {u}'),
           note=f'p_S - p_T where a teacher R of another seed has p_R < {u} (no selection on the '
           'teacher\'s own noise), training set'),
      _row(f'{reference}/deviation_where_sure', stats['deviation_where_reference_sure'],
           compare='>=', threshold=-c.sure_tolerance,
           too_few=few('points_reference_sure', f'p_R >= {s}'),
           note=f'p_S - p_T where p_R >= {s}, training set'),
      _row(f'{reference}/log_odds_slope', stats['reference_slope'], compare='>',
           threshold=c.reference_slope_above,
           note='cov(logit p_S, logit p_R) / cov(logit p_T, logit p_R): 1 + a (b - 1), > 1 only '
           'when the student amplifies what it copies from its teacher'),
  ]


# ---------------------------------------------------------------------------------------------
# Distillation's gain and late switching: paired per-seed differences (the students of a regime
# share their batches).
# ---------------------------------------------------------------------------------------------
def gain_checks(config, regimes: dict[str, Any]) -> list[dict[str, Any]]:
  c = config.checks
  rows, with_gain = [], []
  for name, r in regimes.items():
    row = _row(f'distillation_gain/{name}', r['paired']['gain'], compare='>',
               threshold=c.min_gain, informational=True,
               note='distilled - one-hot test accuracy, paired by seed')
    rows.append(row)
    if row['state'] == report.HOLDS:
      with_gain.append(name)
  if not with_gain:
    rows.append(report.check(
        'late_switch_recovers_gain', len(with_gain), compare='>=', threshold=1,
        evidence='exact', note=f'regimes whose paired gain interval lies above {c.min_gain}',
        inconclusive=f'no regime shows a distillation gain (of {len(regimes)}): nothing to '
        'recover'))
  for name in with_gain:
    paired = regimes[name]['paired']
    kept = [late - c.recovery_fraction * gain
            for late, gain in zip(paired['late_gain'], paired['gain'])]
    rows.append(_row(f'late_switch_recovers_gain/{name}', kept, compare='>=', threshold=0.0,
                     note=f'(late - one-hot) - {c.recovery_fraction} x (distilled - one-hot) '
                     'test accuracy, paired by seed'))
  return rows


def make_checks(config, numbers: dict[str, Any]) -> list[dict[str, Any]]:
  """Every claim's rows: one value against one threshold, decided by an interval over seeds."""
  rows = []
  if numbers.get('eigenspace'):
    rows += eigenspace_checks(config, numbers['eigenspace'])
  for name in config.deviation_regimes:
    rows += exaggeration_checks(config, name, numbers['exaggeration'][name]['train'])
  rows += gain_checks(config, numbers['regimes'])
  return rows


# ---------------------------------------------------------------------------------------------
# The diagnosis: where (if anywhere) the effect appears.
# ---------------------------------------------------------------------------------------------
DIAGNOSIS_COLUMNS = (
    'regime', 'split', 'student / teacher steps', 'points p_T < u (per seed)',
    'p_S - p_T where p_T < u', 'p_O - p_T (control)', 'excess p_S - p_O', 'excess slope',
    'p_S - p_T where p_R < u', 'p_S - p_T where p_R >= s', 'reference slope', 'reading')


def _cell(values, digits: int = 3) -> str:
  stats = interval(values)
  if stats is None:
    return 'n/a'
  return (f'{stats["mean"]:+.{digits}f} [{stats["low"]:+.{digits}f}, '
          f'{stats["high"]:+.{digits}f}]')


def _state(values, compare, threshold) -> str | None:
  stats = interval(values)
  if stats is None:
    return None
  return report.decide(stats['mean'], compare, threshold, (stats['low'], stats['high']))[0]


def reading(config, stats: dict[str, list]) -> str:
  """What the reference intervals say: 'exaggerates' when all three hold; else what they show
  (the student below its teacher on hard and easy points alike is less confident overall, not
  exaggerating)."""
  c = config.checks
  enough = lambda key: min(stats[key] or [0]) >= c.min_points
  unsure = (_state(stats['deviation_where_reference_unsure'], '<', 0.0)
            if enough('points_reference_unsure') else None)
  sure = (_state(stats['deviation_where_reference_sure'], '>=', -c.sure_tolerance)
          if enough('points_reference_sure') else None)
  slope = _state(stats['reference_slope'], '>', c.reference_slope_above)
  if unsure == sure == slope == report.HOLDS:
    return 'exaggerates'
  words = {report.HOLDS: {'u': 'below T where R unsure', 's': 'not below T where R sure',
                          'slope': 'slope > 1'},
           report.FAILS: {'u': 'above T where R unsure', 's': 'below T where R sure',
                          'slope': 'slope <= 1'}}
  parts = [words[state][key] for key, state in (('u', unsure), ('s', sure), ('slope', slope))
           if state in words]
  undecided = sum(state not in words for state in (unsure, sure, slope))
  if undecided:
    parts.append(f'{undecided} undecided')
  return '; '.join(parts)


def diagnosis_table(config, numbers: dict[str, Any]) -> dict[str, Any]:
  c = config.checks
  rows = []
  for name, by_split in numbers['exaggeration'].items():
    length = numbers['regimes'][name]['student_length']
    for split, stats in by_split.items():
      rows.append([name, split, f'{length:g}x', int(np.mean(stats['points_unsure'])),
                   _cell(stats['deviation_where_unsure']), _cell(stats['control_where_unsure']),
                   _cell(stats['excess_where_unsure']), _cell(stats['excess_slope']),
                   _cell(stats['deviation_where_reference_unsure']),
                   _cell(stats['deviation_where_reference_sure']),
                   _cell(stats['reference_slope']), reading(config, stats)])
  return report.table(
      'Diagnosis: where the distilled student exaggerates its teacher (means over seeds '
      '[95% Student-t intervals])', DIAGNOSIS_COLUMNS, rows,
      note=f'u = {c.unsure_below}, s = {c.sure_from}. T: the teacher (p_T), S: its distilled '
      'student (p_S), O: the one-hot control (another seed, the student\'s steps, labels only), '
      'R: a teacher of another seed, independent of T\'s noise. Binned by p_T, any model that '
      'does not share T\'s noise sits above T where p_T is low (regression to the mean: see O); '
      'p_S - p_O removes that but a mere copy of T shows it too; binned by p_R neither T nor S is '
      'selected on its noise, and p_S - p_T < 0 where p_R < u, >= -tolerance where p_R >= s, '
      'with a reference slope > 1, is exaggeration. Reading: the reference columns\' intervals.')

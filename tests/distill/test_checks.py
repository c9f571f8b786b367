"""The claim checks as report rows: one scalar against one threshold per row, the parts of each
compound claim on rows of their own, and the verdict rule distill has always used (no training)."""

import functools
import itertools

import numpy as np
import pytest

from configs.distill import mnist1d as distill_config
from distill import deviations as dev_lib
from distill import experiment


def _config(**checks):
  config = distill_config.get_config('tiny')
  for key, value in checks.items():
    config.checks[key] = value
  return config


def _deviations(n: int, exaggerate: bool, seed: int = 0):
  """Teacher and student probabilities over 3 classes; the student pushes the true class's
  probability away from 1/2 (exaggerates) or toward it."""
  rng = np.random.default_rng(seed)
  p_true = rng.uniform(0.05, 0.999, n)
  logit = np.log(p_true / (1 - p_true))
  p_student = 1 / (1 + np.exp(-(1.5 if exaggerate else 0.6) * logit))
  rest = lambda p: np.stack([p, (1 - p) / 2, (1 - p) / 2], 1)
  return dev_lib.analyse(rest(p_true), rest(p_student), np.zeros(n, np.int64))


def _numbers(config, *, exaggerate=True, points=2000, gains=((0.02, 0.015),)):
  """numbers as run() builds them: one deviation regime, regimes with (distilled - one-hot,
  late - one-hot) test accuracy gains."""
  group = experiment.exaggeration_check(config, _deviations(points, exaggerate))
  group['test'] = experiment.exaggeration_check(config, _deviations(points, exaggerate, 1))
  group['onehot_control'] = experiment.exaggeration_check(config, _deviations(points, False, 2))
  regimes = {}
  for i, (gain, late_gain) in enumerate(gains):
    accuracy = {'teacher': [0.8, 0.8], 'onehot': [0.7, 0.7], 'distilled': [0.7 + gain] * 2,
                'late': [0.7 + late_gain] * 2}
    regimes[f'regime{i}'] = {'late': experiment.late_check(config, accuracy)}
  numbers = {'regimes': regimes, 'exaggeration': {'regime0': group}}
  numbers['eigenspace'], views = _eigenspace(config.checks.ratio_top_min)
  return numbers, views


@functools.lru_cache(maxsize=None)
def _eigenspace(ratio_top_min: float):
  """The tiny config's eigenspace demo (a second of numpy), once per threshold."""
  return experiment.eigenspace_run(_config(ratio_top_min=ratio_top_min))


def _old_verdict(numbers):
  """The rule of distill's former numbers['checks'] tree and its _verdict."""
  def verdict(values):
    values = list(values)
    if any(v is False for v in values):
      return False
    return None if any(v is None for v in values) else True
  late = [v['late']['holds'] for v in numbers['regimes'].values()]
  with_gain = [h for h in late if h is not None]
  return verdict([numbers['eigenspace']['holds'],
                  verdict(e['holds'] for e in numbers['exaggeration'].values()),
                  verdict(with_gain) if with_gain else None])


def test_every_row_is_one_scalar_value_against_one_threshold():
  config = _config()
  numbers, views = _numbers(config, points=10)  # too few points: the value cells stay scalars
  checks, _ = experiment.make_checks(config, numbers, views)
  for c in checks:
    assert isinstance(c['value'], (int, float, type(None))) and not isinstance(c['value'], bool), c
    assert isinstance(c['threshold'], str) and c['threshold'][0] in '<>', c
  names = {c['name'] for c in checks}
  for part in ('deviation_where_unsure', 'deviation_where_sure', 'log_odds_slope',
               'points_unsure', 'points_sure'):
    assert f'student_exaggerates_confidence/regime0/{part}' in names
  assert {'eigenspace_ratio_falls/ratio_top', 'eigenspace_ratio_falls/ratio_bottom',
          'eigenspace_ratio_falls/closed_form_max_error'} <= names


def test_deciding_and_informational_rows_are_as_before():
  config = _config()
  numbers, views = _numbers(config)
  checks, _ = experiment.make_checks(config, numbers, views)
  for c in checks:
    reported_beside = ('/test/' in c['name'] or '/onehot_control/' in c['name']
                       or c['name'].startswith('distillation_helps'))
    assert c['informational'] == reported_beside, c['name']


@pytest.mark.parametrize('exaggerate,points,gains,top_min', list(itertools.product(
    (True, False), (2000, 10), (((0.02, 0.015),), ((0.02, 0.001),), ((-0.01, 0.0),),
                                ((0.02, 0.015), (0.03, 0.0)), ()), (0.9, 1.5))))
def test_the_verdict_rule_is_the_old_one(exaggerate, points, gains, top_min):
  config = _config(ratio_top_min=top_min)
  numbers, views = _numbers(config, exaggerate=exaggerate, points=points, gains=gains)
  checks, reproduced = experiment.make_checks(config, numbers, views)
  assert reproduced == _old_verdict(numbers)


def test_a_clear_exaggeration_with_a_recovered_gain_reproduces():
  config = _config()
  numbers, views = _numbers(config, exaggerate=True)
  checks, reproduced = experiment.make_checks(config, numbers, views)
  assert reproduced is True
  assert all(c['holds'] for c in checks if not c['informational'])


def test_too_few_points_make_exaggeration_inconclusive_not_failed():
  config = _config()
  numbers, views = _numbers(config, exaggerate=False, points=10)  # parts fail, but 10 < 20
  checks, reproduced = experiment.make_checks(config, numbers, views)
  rows = {c['name']: c for c in checks}
  assert rows['student_exaggerates_confidence/regime0/points_unsure']['holds'] is False
  assert rows['student_exaggerates_confidence/regime0/log_odds_slope']['holds'] is False
  assert 'inconclusive' in rows['student_exaggerates_confidence/regime0/log_odds_slope']['note']
  assert reproduced is None
  numbers, views = _numbers(config, exaggerate=False, points=2000)
  assert experiment.make_checks(config, numbers, views)[1] is False


def test_no_regime_with_a_gain_makes_late_switching_inconclusive():
  config = _config()
  numbers, views = _numbers(config, gains=((-0.01, 0.0), (0.004, 0.004)))
  checks, reproduced = experiment.make_checks(config, numbers, views)
  rows = {c['name']: c for c in checks}
  row = rows['late_switch_recovers_gain/regimes_with_gain']
  assert (row['value'], row['holds']) == (0, False) and 'inconclusive' in row['note']
  assert not any(n.startswith('late_switch_recovers_gain/regime') and n.endswith(('0', '1'))
                 for n in rows)
  assert reproduced is None
  best = rows['distillation_helps/best_gain']
  assert best['value'] == pytest.approx(0.004) and best['informational']

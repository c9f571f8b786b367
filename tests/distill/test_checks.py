"""The claim checks (distill/claims.py) and the exaggeration measures (distill/exaggeration.py) on
synthetic per-seed numbers: each row computes its own state from an interval over seeds, and the
verdict is report.verdict's (no training)."""

import numpy as np
import pytest

from common import report
from configs.distill import mnist1d as distill_config
from distill import claims
from distill import exaggeration
from distill import experiment


def _config(**checks):
  config = distill_config.get_config('tiny')
  for key, value in checks.items():
    config.checks[key] = value
  return config


def _sigmoid_rows(z):
  p = 1 / (1 + np.exp(-z))
  return np.stack([p, 1 - p], 1)  # class 0 is the true class


def _linear_models(seed, *, copy, amplify, n=20_000):
  """The linear picture of exaggeration.py: difficulty f, teacher, reference and control with
  their own noise, a student that copies `copy` of its teacher amplified by `amplify`."""
  rng = np.random.default_rng(seed)
  f = rng.normal(1.0, 1.5, n)
  noise = lambda: rng.normal(0, 1.0, n)
  z_t, z_r, z_o = f + noise(), f + noise(), f + noise()
  z_s = copy * amplify * z_t + (1 - copy) * f + 0.3 * noise()
  return [_sigmoid_rows(z) for z in (z_t, z_s, z_o, z_r)] + [np.zeros(n, np.int64)]


def _stats(seed, **kwargs):
  return exaggeration.seed_stats(*_linear_models(seed, **kwargs), unsure_below=0.4,
                                 sure_from=0.95)


def test_a_faithful_copy_beats_the_control_but_not_the_independent_reference():
  stats = _stats(0, copy=0.8, amplify=1.0)
  # Binned by p_T, the control regresses to the mean: above T where T is unsure.
  assert stats['control_where_unsure'] > 0.05
  assert stats['excess_where_unsure'] < -0.05 and stats['excess_slope'] > 0.1
  # Binned by an independent teacher, a copy is neither below T nor steeper: no exaggeration.
  assert abs(stats['deviation_where_reference_unsure']) < 0.01
  assert stats['reference_slope'] == pytest.approx(1.0, abs=0.03)


def test_an_exaggerating_student_is_seen_by_the_reference():
  stats = _stats(1, copy=0.8, amplify=1.5)
  assert stats['reference_slope'] == pytest.approx(1 + 0.8 * 0.5, abs=0.05)
  assert stats['deviation_where_reference_unsure'] < -0.02
  assert stats['deviation_where_reference_sure'] > 0


def test_an_independent_student_shows_regression_to_the_mean_only():
  stats = _stats(2, copy=0.0, amplify=1.0)
  assert stats['deviation_where_unsure'] > 0.05  # the raw deviation the old check read
  assert abs(stats['excess_where_unsure']) < 0.02
  assert stats['reference_slope'] == pytest.approx(1.0, abs=0.03)


def test_seed_stats_refuse_bad_input():
  p_t, p_s, p_o, p_r, labels = _linear_models(0, copy=0.5, amplify=1.0, n=10)
  with pytest.raises(exaggeration.DistillError, match='p_reference has 9 rows for 10 labels'):
    exaggeration.seed_stats(p_t, p_s, p_o, p_r[:9], labels, unsure_below=0.4, sure_from=0.95)
  with pytest.raises(exaggeration.DistillError, match='unsure_below <= sure_from'):
    exaggeration.seed_stats(p_t, p_s, p_o, p_r, labels, unsure_below=0.9, sure_from=0.5)
  with pytest.raises(exaggeration.DistillError, match='need >= 2 seeds'):
    exaggeration.per_seed([{}], 'train', unsure_below=0.4, sure_from=0.95)


def _numbers(*, amplify=1.5, points=20_000, gains=None, mse=(-0.02, -0.03, -0.025)):
  """numbers as experiment.run builds them: one deviation regime ('digits', the tiny config's)
  with three seeds; gains: {regime: (per-seed distilled - one-hot, per-seed late - one-hot)}."""
  keys = exaggeration.COUNTS + exaggeration.STATS
  per_seed = [_stats(s, copy=0.8, amplify=amplify, n=points) for s in range(3)]
  stats = {k: [s[k] for s in per_seed] for k in keys}
  gains = gains if gains is not None else {'digits': ([0.02, 0.025, 0.03], [0.02, 0.02, 0.025])}
  regimes = {name: {'paired': {'gain': list(g), 'late_gain': list(l)}, 'student_length': 1.0}
             for name, (g, l) in gains.items()}
  regimes.setdefault('digits', {'paired': {'gain': [0.0] * 3, 'late_gain': [0.0] * 3},
                                'student_length': 1.0})
  return {'eigenspace': {'per_seed': {'student_minus_teacher_mse': list(mse),
                                      'ratio_top': [1.0] * 3, 'ratio_bottom': [0.2, 0.25, 0.3]}},
          'regimes': regimes,
          'exaggeration': {'digits': {'train': stats, 'test': stats}}}


def _rows(config, numbers):
  checks = claims.make_checks(config, numbers)
  return checks, {c['name']: c for c in checks}


def test_every_row_is_one_value_against_one_threshold_with_its_own_state():
  config = _config()
  checks, rows = _rows(config, _numbers())
  for c in checks:
    assert c['compare'] in report.COMPARISONS and c['state'] in report.STATES, c
    assert isinstance(c['value'], (int, float)) and not isinstance(c['value'], bool), c
    if not c['informational']:
      assert c['evidence'] != 'single value', c['name']
  for part in ('vs_control/excess_where_unsure', 'vs_control/excess_where_sure',
               'vs_control/excess_log_odds_slope', 'vs_reference/deviation_where_unsure',
               'vs_reference/deviation_where_sure', 'vs_reference/log_odds_slope'):
    assert not rows[f'exaggeration/digits/{part}']['informational']
  assert not rows['eigenspace/student_minus_teacher_test_mse']['informational']
  assert rows['eigenspace/ratio_bottom']['informational']
  assert rows['distillation_gain/digits']['informational']
  assert not any('closed_form' in name for name in rows)  # a test now, not a check


def test_a_clear_exaggeration_with_a_recovered_gain_reproduces():
  config = _config()
  checks, rows = _rows(config, _numbers(amplify=1.5))
  assert report.verdict(checks) == 'reproduced', [
      (c['name'], c['state']) for c in checks if c['state'] != 'holds']
  assert rows['late_switch_recovers_gain/digits']['state'] == report.HOLDS


def test_a_faithful_copy_holds_against_the_control_and_fails_against_the_reference():
  config = _config()
  checks, rows = _rows(config, _numbers(amplify=1.0))
  assert rows['exaggeration/digits/vs_control/excess_where_unsure']['state'] == report.HOLDS
  assert rows['exaggeration/digits/vs_reference/log_odds_slope']['state'] != report.HOLDS
  assert report.verdict(checks) != 'reproduced'


def test_no_regime_with_a_gain_makes_late_switching_inconclusive_not_failed():
  config = _config()
  gains = {'digits': ([-0.02, 0.01, 0.0], [0.0, 0.0, 0.0]), 'small': ([-0.03] * 2 + [-0.04],
                                                                      [0.0] * 3)}
  checks, rows = _rows(config, _numbers(gains=gains))
  row = rows['late_switch_recovers_gain']
  assert row['state'] == report.INCONCLUSIVE and 'no regime shows a distillation gain' in \
      row['reason']
  assert not row['informational'] and row['value'] == 0
  assert rows['distillation_gain/small']['state'] == report.FAILS  # informational
  assert report.verdict(checks) == 'inconclusive'  # everything else holds


def test_gains_are_paired_differences_over_seeds():
  """Seeds that differ by 0.2 in accuracy but keep one distilled - one-hot difference: the gain
  is decided by the paired differences' interval, not by the spread of either arm."""
  config = _config()
  onehot = np.array([0.6, 0.8, 0.7])
  distilled, late = onehot + [0.010, 0.012, 0.011], onehot + [0.009, 0.008, 0.010]
  gains = {'digits': (list(distilled - onehot), list(late - onehot))}
  _, rows = _rows(config, _numbers(gains=gains))
  gain = rows['distillation_gain/digits']
  assert gain['state'] == report.HOLDS and gain['interval'][0] > 0
  assert rows['late_switch_recovers_gain/digits']['state'] == report.HOLDS
  gains = {'digits': (list(distilled - onehot), [0.0, 0.001, -0.001])}  # the late student lost it
  _, rows = _rows(config, _numbers(gains=gains))
  assert rows['late_switch_recovers_gain/digits']['state'] == report.FAILS


def test_too_few_points_leave_the_exaggeration_rows_inconclusive():
  config = _config(min_points=30)
  checks, rows = _rows(config, _numbers(amplify=1.0, points=40))
  row = rows['exaggeration/digits/vs_reference/deviation_where_unsure']
  assert row['state'] == report.INCONCLUSIVE and 'too few points' in row['reason']


def test_the_eigenspace_check_is_decided_by_training_and_can_fail():
  config = _config()
  numbers, _ = experiment.eigenspace_run(config)
  rows = {c['name']: c for c in claims.eigenspace_checks(config, numbers)}
  row = rows['eigenspace/student_minus_teacher_test_mse']
  assert row['evidence'] == 'interval' and row['state'] == report.HOLDS
  # A teacher stopped early on noiseless data underfits: the student's extra shrinkage hurts.
  config.eigenspace.noise = 0.0
  config.eigenspace.teacher_steps = 20
  numbers, _ = experiment.eigenspace_run(config)
  rows = {c['name']: c for c in claims.eigenspace_checks(config, numbers)}
  assert rows['eigenspace/student_minus_teacher_test_mse']['state'] == report.FAILS


def test_gradient_descent_matches_its_closed_forms_at_the_cpu_settings():
  """The former check 'closed_form_max_error <= 1e-8' cannot fail: it is this test."""
  config = distill_config.get_config('cpu')
  config.eigenspace.seeds = 2
  numbers, views = experiment.eigenspace_run(config)
  assert numbers['closed_form_max_error'] < 1e-12
  assert all(v.closed_form_error < 1e-12 for v in views)


def test_the_diagnosis_table_reads_the_reference_intervals():
  config = _config()
  numbers = _numbers(amplify=1.5)
  table = claims.diagnosis_table(config, numbers)
  assert table['title'].startswith('Diagnosis: ')
  assert len(table['rows']) == 2 and all(len(r) == len(table['columns']) for r in table['rows'])
  assert table['rows'][0][-1] == 'exaggerates'
  numbers = _numbers(amplify=1.0)
  reading = claims.diagnosis_table(config, numbers)['rows'][0][-1]
  assert reading != 'exaggerates'


def test_a_seed_without_a_value_leaves_its_row_inconclusive_as_an_interval_check():
  """No point of a seed in a bin (NaN) is not a 'single value' deciding row: the interval over
  seeds that would decide is missing, and the row says why."""
  config = _config()
  numbers = _numbers()
  stats = numbers['exaggeration']['digits']['train']
  stats['excess_where_sure'] = [0.01, float('nan'), 0.02]
  stats['points_sure'] = [500, 0, 400]
  rows = {c['name']: c for c in claims.make_checks(config, numbers)}
  row = rows['exaggeration/digits/vs_control/excess_where_sure']
  assert row['state'] == report.INCONCLUSIVE and row['evidence'] == 'interval'
  assert 'too few points: 0' in row['reason']

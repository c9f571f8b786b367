"""The claim's checks and the diagnosis tables of the summary, read off bootstrap intervals.

    rows = claims.claim_checks(config, primary, contrast_fit, training)  # report.check rows
    tables = claims.diagnosis_tables(config, result)                     # 'Diagnosis: ...'

Every interval is the 95% percentile interval of a bootstrap over seeds (sweep.fit_with_draws: a
resampled seed keeps its whole (n, L) grid); every fit of one run uses the same resamples, so a
difference between two fits (the L >= 8 fit minus the L >= 2 fit) has a paired interval.
Thresholds come from config.checks only.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections
import numpy as np

from common import report
from mup_depth import sweep as sweep_lib


def _cell(value: float, low: float, high: float, digits: int = 2) -> str:
  if not np.isfinite(value):
    return 'n/a'
  return f'{value:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]'


def _interval(draws: np.ndarray) -> tuple[float, float]:
  draws = draws[np.isfinite(draws)]
  if len(draws) < 2:
    return float('nan'), float('nan')
  return report.percentile_interval(draws)


def claim_checks(config: ml_collections.ConfigDict, primary: dict[str, Any],
                 contrast_fit: dict[str, Any] | None,
                 training: dict[str, Any] | None) -> list[dict[str, Any]]:
  """The claim's two deciding checks (exponent in L, exponent in n: each its fit's value against
  its range in config.checks, decided by the bootstrap interval) and the informational ones (the
  standard-parameterisation contrast; the training check, one training seed)."""
  checks_cfg = config.checks
  range_L, range_n = tuple(checks_cfg.exponent_L), tuple(checks_cfg.exponent_n)
  where = (f'linearised one-step change, eta* = sqrt(C / mean over {config.sweep.num_seeds} seeds '
           f'of A), least squares over L >= {primary["min_depth"]} and the widths; 95% bootstrap '
           f'over seeds ({config.num_bootstrap} resamples)')
  rows = [
      report.check('exponent_in_L', round(primary['exponent_L'], 4), compare='in',
                   threshold=range_L,
                   interval=(primary['exponent_L_lo'], primary['exponent_L_hi']), note=where),
      report.check('exponent_in_n', round(primary['exponent_n'], 4), compare='in',
                   threshold=range_n,
                   interval=(primary['exponent_n_lo'], primary['exponent_n_hi']), note=where),
  ]
  if contrast_fit is not None and np.isfinite(contrast_fit['exponent_n']):
    # The contrast shows the width dependence the mean-field readout removes: it should fall
    # outside the width range.
    rows.append(report.check(
        'contrast/standard_parameterisation_exponent_in_n',
        round(contrast_fit['exponent_n'], 4), compare='outside', threshold=range_n,
        interval=(contrast_fit['exponent_n_lo'], contrast_fit['exponent_n_hi']),
        informational=True, note='readout variance 1/n; same estimator and bootstrap'))
  if training is not None:
    t = training['transfer']
    decided = t['depths'] - t['ties']
    rows.append(report.check(
        'training_check/scaled_rate_win_fraction', round(t['scaled_wins'] / max(decided, 1), 4),
        compare='>', threshold=checks_cfg.transfer_win_fraction, informational=True,
        note=f'{t["scaled_wins"]} of {decided} depths (ties {t["ties"]}): the rate tuned at '
             f'L = {config.training.base_depth} scaled by (L/L_base)^(-3/2) against kept fixed; '
             'one training seed'))
    rows.append(report.check(
        'training_check/slope_of_best_lr_in_L', round(training['slope_best_lr'], 4),
        compare='in', threshold=range_L, informational=True,
        note='log-log slope of the best grid rate against depth; one training seed, rates on a '
             'grid'))
  return rows


def _one_width(result: sweep_lib.SweepResult, i: int) -> sweep_lib.SweepResult:
  return dataclasses.replace(
      result, widths=(result.widths[i],), coefficient=result.coefficient[i:i + 1],
      eta_exact=None if result.eta_exact is None else result.eta_exact[i:i + 1])


def exponents_by_fit_range(config: ml_collections.ConfigDict,
                           result: sweep_lib.SweepResult) -> dict[str, Any]:
  """The exponent in L (and n) fitted over L >= m for each m of config.diagnosis_min_depths, by
  the mean and the median of A; the change from the widest fit, paired; the fit over every depth
  with a 1/L correction (the exponent the law settles to); and the local exponent between
  consecutive depths, pooled over widths and per width."""
  kw = dict(num_bootstrap=config.num_bootstrap)
  ranges = []
  widest = None
  for m in sorted(config.diagnosis_min_depths):
    row = {'min_depth': m}
    draws = {}
    for estimator in ('linear_mean', 'linear_median'):
      row[estimator], draws[estimator] = sweep_lib.fit_with_draws(
          result, min_depth=m, estimator=estimator, **kw)
    mean = row['linear_mean']
    if widest is None:
      widest = (mean, draws['linear_mean'])
    row['change_from_widest'] = {
        'value': mean['exponent_L'] - widest[0]['exponent_L'],
        'interval': (list(_interval(draws['linear_mean'][:, 0] - widest[1][:, 0]))
                     if m != widest[0]['min_depth'] else [0.0, 0.0])}
    # How much of the mean's exponent the heavy tail of the per-seed A makes (paired).
    row['mean_minus_median'] = {
        'value': mean['exponent_L'] - row['linear_median']['exponent_L'],
        'interval': list(_interval(draws['linear_mean'][:, 0] - draws['linear_median'][:, 0]))}
    ranges.append(row)
  corrected = None
  if len([d for d in result.depths if d >= min(config.diagnosis_min_depths)]) >= 3:
    corrected = sweep_lib.fit_exponents(result, min_depth=min(config.diagnosis_min_depths),
                                        correction=True, **kw)
  local = []
  for lo, hi in zip(result.depths[:-1], result.depths[1:]):
    row = {'depths': [lo, hi]}
    for estimator in ('linear_mean', 'linear_median'):
      row[estimator] = sweep_lib.fit_exponents(result, min_depth=lo, max_depth=hi,
                                               estimator=estimator, **kw)
    row['per_width'] = {
        f'n={n}': sweep_lib.fit_exponents(_one_width(result, i), min_depth=lo, max_depth=hi,
                                          **kw)
        for i, n in enumerate(result.widths)}
    local.append(row)
  return {'by_min_depth': ranges, 'with_1_over_L_correction': corrected, 'local': local}


def diagnosis_tables(config: ml_collections.ConfigDict,
                     diagnosis: dict[str, Any]) -> list[dict[str, Any]]:
  """'Diagnosis: ...' tables from exponents_by_fit_range."""
  range_L = tuple(config.checks.exponent_L)
  rows = []
  for r in diagnosis['by_min_depth']:
    mean, median = r['linear_mean'], r['linear_median']
    state, _ = report.decide(mean['exponent_L'], 'in', range_L,
                             (mean['exponent_L_lo'], mean['exponent_L_hi']))
    change = r['change_from_widest']
    rows.append([
        f'L >= {r["min_depth"]}', ', '.join(map(str, mean['depths'])),
        _cell(mean['exponent_L'], mean['exponent_L_lo'], mean['exponent_L_hi']), state,
        'reference' if r is diagnosis['by_min_depth'][0] else _cell(change['value'],
                                                                    *change['interval']),
        _cell(mean['exponent_n'], mean['exponent_n_lo'], mean['exponent_n_hi']),
        _cell(median['exponent_L'], median['exponent_L_lo'], median['exponent_L_hi']),
        _cell(r['mean_minus_median']['value'], *r['mean_minus_median']['interval'])])
  c = diagnosis['with_1_over_L_correction']
  if c is not None:
    state, _ = report.decide(c['exponent_L'], 'in', range_L,
                             (c['exponent_L_lo'], c['exponent_L_hi']))
    rows.append([f'L >= {c["min_depth"]}, with a 1/L term', ', '.join(map(str, c['depths'])),
                 _cell(c['exponent_L'], c['exponent_L_lo'], c['exponent_L_hi']), state, 'n/a',
                 _cell(c['exponent_n'], c['exponent_n_lo'], c['exponent_n_hi']), 'n/a', 'n/a'])
  by_range = report.table(
      'Diagnosis: the exponent in L by the depths in the fit (value [95% bootstrap interval over '
      'seeds])',
      ['fit over', 'depths', 'exponent in L (mean of A)', f'against {list(range_L)}',
       'change from the widest fit (paired)', 'exponent in n (mean of A)',
       'exponent in L (median of A)', 'mean minus median (paired)'], rows,
      note=f'The deciding fit is L >= {config.fit_min_depth}. A finite-depth correction shows as '
           'an exponent that moves toward the law as small depths leave the fit (a change whose '
           'interval excludes 0) and settles; the 1/L row fits log eta* = a + b log L + c log n '
           '+ e / L over every depth, b the exponent at large depth. The median of A weighs the '
           'heavy tail of the per-seed change less than the mean (the card\'s estimator): a '
           'mean-minus-median exponent below 0 is a tail that grows with depth.')
  widths = list(diagnosis['local'][0]['per_width']) if diagnosis['local'] else []
  local_rows = []
  for r in diagnosis['local']:
    mean, median = r['linear_mean'], r['linear_median']
    local_rows.append(
        [f'{r["depths"][0]} -> {r["depths"][1]}',
         _cell(mean['exponent_L'], mean['exponent_L_lo'], mean['exponent_L_hi']),
         _cell(median['exponent_L'], median['exponent_L_lo'], median['exponent_L_hi'])]
        + [_cell(f['exponent_L'], f['exponent_L_lo'], f['exponent_L_hi'])
           for f in r['per_width'].values()])
  local = report.table(
      'Diagnosis: the local exponent between consecutive depths (value [95% bootstrap interval '
      'over seeds])',
      ['depths', 'pooled over widths (mean of A)', 'pooled (median of A)']
      + [f'{w} (mean of A)' for w in widths], local_rows,
      note='log(eta*(L2) / eta*(L1)) / log(L2 / L1). Under the law every row is -1.5; a '
           'finite-depth correction makes the rows drift toward it with depth, a finite-width one '
           '(n not >> L) away from it at the deepest rows of the narrowest width.')
  return [by_range, local]

"""The claim's checks, fixed in config.checks before the run: one value against one threshold per
row, each a per-seed paired difference of SCOD risks (mean over budgets) decided by its 95%
Student-t interval over seeds (report.mean_interval): holds when the whole interval is on the
claimed side, fails when none of it is, inconclusive when it straddles.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from common import report


def gaussian_checks(config, rows) -> list[dict[str, Any]]:
  """The closed-form check's rows at each c_fn, each decided by its Student-t interval over the
  Gaussian seeds (per seed: risks averaged over budgets): the plug-in from the largest n within
  checks.bayes_margin of the exact Bayes risk, and its gap to Bayes no larger at the largest n
  than at the smallest (growth <= checks.bayes_gap_growth)."""
  cfg, checks_cfg = config.gaussians, config.checks
  n_min, n_max = cfg.sizes[0], cfg.sizes[-1]
  out = []
  for c in config.c_fns:
    gap = lambda r, n: float(np.mean(r[n]['risk'][c]['plugin']) - np.mean(r[n]['risk'][c]['bayes']))
    at_max = report.mean_interval([gap(r, n_max) for r in rows])
    growth = report.mean_interval([gap(r, n_max) - gap(r, n_min) for r in rows])
    out.append(report.check(
        f'gaussians/c_fn={c}: plug-in minus Bayes risk at n={n_max}', at_max['mean'],
        compare='<=', threshold=float(checks_cfg.bayes_margin),
        interval=(at_max['low'], at_max['high'])))
    out.append(report.check(
        f'gaussians/c_fn={c}: gap to Bayes at n={n_max} minus at n={n_min}', growth['mean'],
        compare='<=', threshold=float(checks_cfg.bayes_gap_growth),
        interval=(growth['low'], growth['high'])))
  return out


def risk_differences(srows, c: float) -> dict[str, list[float]]:
  """Per seed, at cost c_fn = c, paired differences of the SCOD risk averaged over the budgets:
  plug-in minus MSP, plug-in minus the setting's OOD score alone ('ood'), MSP minus plug-in.
  Every method of a seed is scored on that seed's test mixture, so the differences are paired."""
  mean = lambda r, m: float(np.mean(r['risk'][c][m]))
  return {'plugin_minus_msp': [mean(r, 'plugin') - mean(r, 'msp') for r in srows],
          'plugin_minus_ood': [mean(r, 'plugin') - mean(r, 'ood') for r in srows],
          'msp_minus_plugin': [mean(r, 'msp') - mean(r, 'plugin') for r in srows]}


def setting_checks(checks_cfg, name: str, setting: str, c: float,
                   diffs: dict[str, list[float]]) -> list[dict[str, Any]]:
  """The claim's rows for one dataset, setting and c_fn, each decided by its Student-t interval
  over seeds. 'Never worse than the better of MSP and the OOD score' is two rows: the plug-in
  minus MSP, and minus the OOD score, each <= checks.noise_margin. With the wild mixture, 'clearly
  better': MSP minus the plug-in >= checks.clear_gain."""
  rows = []
  claims = [('plugin_minus_msp', 'plug-in minus MSP', '<=', checks_cfg.noise_margin),
            ('plugin_minus_ood', 'plug-in minus the OOD score', '<=', checks_cfg.noise_margin)]
  if setting == 'wild':
    claims.append(('msp_minus_plugin', 'MSP minus plug-in', '>=', checks_cfg.clear_gain))
  for key, what, compare, threshold in claims:
    iv = report.mean_interval(diffs[key])
    rows.append(report.check(f'{name}/{setting}/c_fn={c}: {what} (SCOD risk)', iv['mean'],
                             compare=compare, threshold=float(threshold),
                             interval=(iv['low'], iv['high'])))
  return rows

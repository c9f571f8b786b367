"""The pause study's checks: per-seed paired differences of exact match, decided by intervals.

The fine-tuning ensemble has one model per seed, and seed m of every setting is fine-tuned in the
same data order from its setting's pretrained weights, so a setting is compared with the baseline
(StdPT_StdFT) seed by seed: the per-seed difference of the exact match (mean over tasks), and its
Student-t interval over seeds (report.mean_interval) decides. A difference between two arms whose
exact match is below `config.checks.floor` in both is inconclusive ('both arms at the floor'):
near zero everywhere, "about the baseline" and "no gain" hold trivially.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from common import report

BASELINE = 'StdPT_StdFT'
FLOOR_REASON = 'both arms at the floor (exact match below checks.floor = {floor:g} in both)'


def per_seed(table: dict[str, list[float]], tasks) -> np.ndarray:
  """(seeds,) exact match of one setting, mean over tasks, per seed."""
  return np.mean([np.asarray(table[t], np.float64) for t in tasks], axis=0)


def interval(values) -> dict[str, Any]:
  return report.mean_interval([float(v) for v in values])


def _floor_reason(config, *arms: np.ndarray) -> str:
  floor = config.checks.floor
  if all(float(np.mean(a)) < floor for a in arms):
    return FLOOR_REASON.format(floor=floor)
  return ''


def _diff_check(name, a, b, config, *, compare, threshold, informational=False, note=''):
  """A check on mean(a - b) over seeds (paired), inconclusive when both arms are at the floor."""
  gap = interval(np.asarray(a) - np.asarray(b))
  return report.check(name, round(gap['mean'], 4), compare=compare, threshold=threshold,
                      interval=(gap['low'], gap['high']),
                      inconclusive=_floor_reason(config, a, b), informational=informational,
                      note=note)


def check_claims(config, table: dict[str, dict[str, list[float]]],
                 minf: dict[int, dict[str, list[float]]]) -> list[dict[str, Any]]:
  """The checks stated before the run (thresholds in config.checks), one value per row."""
  c, names = config.checks, list(config.tasks)
  base = per_seed(table[BASELINE], names)
  out = []
  if 'PausePT_PauseFT' in table:
    both = per_seed(table['PausePT_PauseFT'], names)
    out.append(_diff_check(
        'PausePT_PauseFT minus StdPT_StdFT, exact match (mean over tasks; paired by seed)',
        both, base, config, compare='>', threshold=c.beats_margin))
    for task in names:   # the per-task rows: shown, the mean over tasks decides
      out.append(_diff_check(
          f'{task}: PausePT_PauseFT minus StdPT_StdFT, exact match',
          table['PausePT_PauseFT'][task], table[BASELINE][task], config, compare='>',
          threshold=c.beats_margin, informational=True))
  if 'StdPT_PauseFT' in table:
    out.append(_diff_check(
        'StdPT_PauseFT minus StdPT_StdFT, exact match (mean over tasks): about the baseline',
        per_seed(table['StdPT_PauseFT'], names), base, config, compare='in',
        threshold=(-c.about_margin, c.about_margin)))
  if 'StdPT_FillerFT' in table:
    out.append(_diff_check(
        "StdPT_FillerFT ('.' filler) minus StdPT_StdFT, exact match (mean over tasks): no gain",
        per_seed(table['StdPT_FillerFT'], names), base, config, compare='<=',
        threshold=c.about_margin))
  full = config.num_pauses
  if 0 in minf and full in minf:
    at = {m: per_seed(row, names) for m, row in minf.items()}
    out.append(_diff_check(
        f'PausePT_PauseFT: exact match at M_inf = {full} minus at M_inf = 0 (mean over tasks)',
        at[full], at[0], config, compare='>=', threshold=c.minf0_drop))
    few = min((m for m in minf if 0 < m < full), default=None)
    if few is not None:
      # Linear in the seeds' values (no ratio of noisy numbers): >= 0 when M_inf = few recovers
      # at least recover_share of the drop.
      excess = (at[few] - at[0]) - c.recover_share * (at[full] - at[0])
      gap = interval(excess)
      out.append(report.check(
          f'PausePT_PauseFT: M_inf = {few} recovers at least {c.recover_share:g} of the M_inf = 0 '
          f'drop (EM({few}) - EM(0) - {c.recover_share:g} (EM({full}) - EM(0)))',
          round(gap['mean'], 4), compare='>=', threshold=0.0,
          interval=(gap['low'], gap['high']),
          inconclusive=_floor_reason(config, at[full], at[few])))
  return out

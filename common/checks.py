"""Claim checks as evidence: a check is given its value (with an interval over seeds, or a null),
a comparison and a threshold, and computes its own state: holds, fails or inconclusive.

    gap = checks.mean_interval(per_seed_gaps)               # Student-t interval over seeds
    checks.check('FIRE minus the best at 4x', gap['mean'], compare='<=', threshold=0.02,
                 interval=(gap['low'], gap['high']))

A check holds when its whole interval satisfies the comparison, fails when none of it does, and is
inconclusive when the interval straddles the threshold (or a reason given by the paper makes it
so: both arms at the floor, no regime with the effect). A paper's verdict follows by VERDICT_RULE.
Papers reach these through common.report (report.check, report.mean_interval, ...).
"""

from __future__ import annotations

import math
from typing import Any, Sequence


def _fmt(x) -> str:
  return f'{x:.4g}' if isinstance(x, float) else str(x)


def jsonable(value):
  if isinstance(value, dict):
    return {str(k): jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [jsonable(v) for v in value]
  if hasattr(value, 'item') and getattr(value, 'ndim', 1) == 0:
    value = value.item()
  if hasattr(value, 'tolist'):
    return value.tolist()
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  return value


class SummaryError(ValueError):
  """A summary that the report could not render as asked (a malformed check or table)."""


# ---------------------------------------------------------------------------------------------
# Checks: evidence, not single differences.
# ---------------------------------------------------------------------------------------------
HOLDS, FAILS, INCONCLUSIVE = 'holds', 'fails', 'inconclusive'
STATES = (HOLDS, FAILS, INCONCLUSIVE)
# value `compare` threshold: what must be true for the claim; 'in' / 'outside' take (low, high).
COMPARISONS = ('>', '>=', '<', '<=', 'in', 'outside')
# How a check's state was decided.
EVIDENCE = (
    'interval',      # the value's interval (over seeds, or a bootstrap) against the threshold
    'null',          # the value against what noise alone gives (the threshold is the null's
                     # 95th percentile, or the null's interval's far end)
    'exact',         # a quantity this run computes without sampling noise (a closed form, a count)
    'single value',  # one difference, no interval: shown as such; a deciding check of the main
                     # job must not be one (tests/test_results.py)
)
VERDICT_RULE = ('reproduced when every deciding check holds; not reproduced when any deciding '
                'check fails; otherwise inconclusive')


def _finite_number(value) -> bool:
  return (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value))


def mean_interval(samples: Sequence[float], level: float = 0.95) -> dict[str, Any]:
  """The mean of `samples` (one per seed) and its two-sided Student-t interval at `level`.

  {'mean', 'low', 'high', 'std', 'n', 'level'}; with one sample the interval is unbounded
  (low = -inf, high = +inf): one seed cannot decide a noisy check.
  """
  values = [float(v) for v in samples]
  if not values or not all(math.isfinite(v) for v in values):
    raise SummaryError(f'mean_interval needs finite samples; got {samples!r}.')
  if not 0.0 < level < 1.0:
    raise SummaryError(f'level={level!r}: expected a number in (0, 1).')
  n = len(values)
  mean = sum(values) / n
  if n == 1:
    return {'mean': mean, 'low': -math.inf, 'high': math.inf, 'std': 0.0, 'n': 1,
            'level': level}
  from scipy import stats  # pylint: disable=g-import-not-at-top
  std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
  half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n)
  return {'mean': mean, 'low': mean - half, 'high': mean + half, 'std': std, 'n': n,
          'level': level}


def percentile_interval(draws: Sequence[float], level: float = 0.95) -> tuple[float, float]:
  """The central `level` interval of bootstrap (or null) draws."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  draws = np.asarray(draws, np.float64)
  if draws.ndim != 1 or len(draws) < 2 or not np.isfinite(draws).all():
    raise SummaryError(f'percentile_interval needs >= 2 finite draws; got shape {draws.shape}.')
  tail = 100 * (1 - level) / 2
  return float(np.percentile(draws, tail)), float(np.percentile(draws, 100 - tail))


def proportion_interval(successes: float, n: int, level: float = 0.95) -> tuple[float, float]:
  """Wilson's score interval of a proportion (e.g. an accuracy over n test examples): what noise
  in the choice of the n examples alone would give."""
  if isinstance(n, bool) or int(n) != n or n < 1 or not 0 <= successes <= n:
    raise SummaryError(f'proportion_interval needs 0 <= successes <= n, n >= 1; got '
                       f'{successes!r} of {n!r}.')
  from scipy import stats  # pylint: disable=g-import-not-at-top
  z = float(stats.norm.ppf(0.5 + level / 2))
  p = successes / n
  centre = (p + z * z / (2 * n)) / (1 + z * z / n)
  half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
  return max(0.0, centre - half), min(1.0, centre + half)


def _side(x: float, compare: str, threshold) -> bool:
  if compare == '>':
    return x > threshold
  if compare == '>=':
    return x >= threshold
  if compare == '<':
    return x < threshold
  if compare == '<=':
    return x <= threshold
  low, high = threshold
  inside = low <= x <= high
  return inside if compare == 'in' else not inside


def decide(value, compare: str, threshold, interval=None) -> tuple[str, str]:
  """(state, reason) of `value compare threshold`, with `interval` (low, high) deciding when given.

  With an interval the check holds when every point of it satisfies the comparison, fails when
  none does, and is inconclusive when it straddles the threshold. Without one the value decides.
  """
  if not _finite_number(value):
    return INCONCLUSIVE, f'the value {value!r} is not a finite number'
  if interval is None:
    state = HOLDS if _side(value, compare, threshold) else FAILS
    return state, ''
  low, high = interval
  if compare in ('in', 'outside'):
    t_low, t_high = threshold
    inside_all = t_low <= low and high <= t_high
    outside_all = high < t_low or low > t_high
    if inside_all or outside_all:
      return (HOLDS if inside_all == (compare == 'in') else FAILS), ''
    return INCONCLUSIVE, (f'interval [{_fmt(low)}, {_fmt(high)}] straddles '
                          f'[{_fmt(t_low)}, {_fmt(t_high)}]')
  ends = (_side(low, compare, threshold), _side(high, compare, threshold))
  if all(ends):
    return HOLDS, ''
  if not any(ends):
    return FAILS, ''
  return INCONCLUSIVE, (f'interval [{_fmt(low)}, {_fmt(high)}] straddles the threshold '
                        f'{_fmt(threshold)}')


def _check_threshold(name, compare, threshold):
  if compare not in COMPARISONS:
    raise SummaryError(f'Check {name!r}: compare={compare!r}; use one of {COMPARISONS}.')
  if compare in ('in', 'outside'):
    if (not isinstance(threshold, (list, tuple)) or len(threshold) != 2
        or not all(_finite_number(t) for t in threshold) or threshold[0] > threshold[1]):
      raise SummaryError(f'Check {name!r}: compare={compare!r} needs threshold=(low, high) with '
                         f'low <= high; got {threshold!r}.')
  elif not _finite_number(threshold):
    raise SummaryError(f'Check {name!r}: threshold must be a finite number; got {threshold!r}.')


def check(name: str, value: Any, threshold: Any = None, holds: bool | None = None, *,
          compare: str | None = None, interval: Sequence[float] | None = None,
          evidence: str | None = None, inconclusive: str = '', informational: bool = False,
          note: str = '') -> dict[str, Any]:
  """One claim check, stated before the run; it computes its own state.

      check('FIRE minus best at 4x', gap['mean'], compare='<=', threshold=0.02,
            interval=(gap['low'], gap['high']))             # holds / fails / inconclusive

  Args:
    name: what is checked.
    value: the measured value (the mean over seeds for an interval check).
    threshold: a number, or (low, high) with compare 'in' / 'outside'.
    holds: the old two-valued form (no `compare`): the caller's own decision, recorded with
      evidence 'single value'. Papers move to `compare=` (issue 27); it is kept while they do.
    compare: one of COMPARISONS: what value must satisfy against threshold for the claim.
    interval: (low, high) of the value (over seeds, or a bootstrap); it decides when given.
    evidence: one of EVIDENCE (default: 'interval' with an interval, else 'single value').
    inconclusive: a reason that makes the check inconclusive whatever the numbers say (e.g.
      'both arms at the floor', 'no regime shows the effect').
    informational: shown, but not deciding the verdict.
  """
  if not isinstance(name, str) or not name:
    raise SummaryError(f'A check needs a name; got {name!r}.')
  if compare is None:
    if holds is None:
      raise SummaryError(f'Check {name!r}: give compare= and threshold= (or the old holds=).')
    state, reason = (HOLDS if holds else FAILS), ''
    evidence = evidence or 'single value'
  else:
    if holds is not None:
      raise SummaryError(f'Check {name!r}: give compare= or holds=, not both: a check computes '
                         'its own state.')
    _check_threshold(name, compare, threshold)
    if interval is not None:
      interval = tuple(float(v) for v in interval)
      if len(interval) != 2 or math.isnan(interval[0]) or math.isnan(interval[1]) \
          or interval[0] > interval[1]:
        raise SummaryError(f'Check {name!r}: interval must be (low, high), low <= high; got '
                           f'{interval!r}.')
    state, reason = decide(value, compare, threshold, interval)
    evidence = evidence or ('interval' if interval is not None else 'single value')
  if evidence not in EVIDENCE:
    raise SummaryError(f'Check {name!r}: evidence={evidence!r}; use one of {EVIDENCE}.')
  if inconclusive:
    state, reason = INCONCLUSIVE, inconclusive
  return {'name': name, 'value': jsonable(value), 'threshold': jsonable(threshold),
          'compare': compare, 'interval': jsonable(list(interval)) if interval else None,
          'state': state, 'reason': reason, 'evidence': evidence,
          'holds': state == HOLDS, 'informational': bool(informational), 'note': note}


def rerun_move_probability(c: dict[str, Any], level: float = 0.95) -> float | None:
  """The probability that a rerun of the same design with fresh seeds gives check `c` another
  state: what noise alone does to it. None when its state does not come from an interval
  (evidence other than 'interval', no finite interval, or a stated reason).

  Normal approximation: the interval is centre +- z se (z for `level`); a rerun's estimate is
  centre + N(0, 2 se^2) (the difference of two independent estimates of one quantity), with an
  interval of the same width, decided by the same rule. A check whose interval end lies on its
  threshold moves with probability ~0.5; one whose interval clears it by a full width, rarely.
  Summed over checks, it is the number of states a reseed is expected to move, the yardstick
  for a comparison with recorded results (a float-order change reseeds training noise in part).
  """
  interval = c.get('interval')
  if (c.get('evidence') != 'interval' or not interval or c.get('compare') not in COMPARISONS
      or not all(_finite_number(v) for v in interval)
      or (c.get('reason') and not str(c['reason']).startswith('interval ['))):
    return None
  from scipy import stats  # pylint: disable=g-import-not-at-top
  z = float(stats.norm.ppf(0.5 + level / 2))
  low, high = (float(v) for v in interval)
  se = (high - low) / (2 * z)
  if se <= 0:
    return None
  centre, spread, half = (low + high) / 2, se * math.sqrt(2), z * se
  below = lambda x: float(stats.norm.cdf((x - centre) / spread))   # P(new centre < x)
  compare, threshold = c['compare'], c['threshold']
  if compare in ('>', '>='):
    p_holds, p_fails = 1 - below(threshold + half), below(threshold - half)
  elif compare in ('<', '<='):
    p_holds, p_fails = below(threshold - half), 1 - below(threshold + half)
  else:
    t_low, t_high = threshold
    p_in = max(0.0, below(t_high - half) - below(t_low + half))
    p_out = below(t_low - half) + 1 - below(t_high + half)
    p_holds, p_fails = (p_in, p_out) if compare == 'in' else (p_out, p_in)
  p_state = {HOLDS: p_holds, FAILS: p_fails,
             INCONCLUSIVE: max(0.0, 1 - p_holds - p_fails)}[c['state']]
  return min(1.0, max(0.0, 1 - p_state))


def expected_moves(checks: Sequence[dict[str, Any]]) -> tuple[float, int]:
  """(expected number of deciding checks a reseed moves, how many could be assessed)."""
  ps = [rerun_move_probability(c) for c in checks if not c.get('informational')]
  ps = [p for p in ps if p is not None]
  return sum(ps), len(ps)


def verdict(checks: Sequence[dict[str, Any]]) -> str | None:
  """'reproduced' / 'not reproduced' / 'inconclusive' by VERDICT_RULE; None without a deciding
  check."""
  states = [c['state'] for c in checks if not c.get('informational')]
  if not states:
    return None
  if FAILS in states:
    return 'not reproduced'
  return 'reproduced' if all(s == HOLDS for s in states) else 'inconclusive'


def verdict_from(checks: Sequence[dict[str, Any]]) -> bool | None:
  """True when every deciding check holds, False when one fails, None otherwise."""
  return {'reproduced': True, 'not reproduced': False}.get(verdict(checks))


def validate_check(c: Any, where: str) -> None:
  """Raises SummaryError naming `where` for a check that is not report.check's form."""
  if not isinstance(c, dict) or not {'name', 'value', 'threshold', 'state'} <= set(c):
    raise SummaryError(f'{where}: a check must come from report.check(...) and carry a state; '
                       f'got {c!r}.')
  if c['state'] not in STATES:
    raise SummaryError(f'{where}: check {c["name"]!r} has state {c["state"]!r}; expected one '
                       f'of {STATES}.')

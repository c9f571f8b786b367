"""The claim checks and the diagnosis tables of the length-generalisation study, read off
intervals over seeds (report.mean_interval, Student t), from the per-seed evaluations alone (no
training).

    gaps = claims.claim_gaps(config, per_seed, config.checks.factors)
    rows = claims.claim_checks(config, gaps)          # report.check rows of the summary
    claims.diagnosis_table(config, per_seed, learned) # 'Diagnosis: ...'

per_seed: {encoding: [one fire_pe.evaluation.evaluate() row per seed, seed 0 first]}; diagnosed
encodings also carry the rows of their frozen normaliser under name + diagnostics.FROZEN.

The claim at a factor f (config.checks): for every seed s,
  gap_s        = loss_s(encoding) - min over the contenders c of loss_s(c)   (the best chosen per
                 seed, among the contenders other than the encoding itself; with a margin >= 0
                 this decides exactly as "the lowest of the contenders, itself included, or within
                 the margin of it")
  below_s(X)   = loss_s(encoding) - loss_s(X) for X in config.checks.below (paired by seed)
and each holds when its whole Student-t interval over seeds is on the claim's side: gap <= margin,
below < 0. One seed gives an unbounded interval: inconclusive, never decided by one difference.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from common import report
from fire_pe import diagnostics
from fire_pe import evaluation


def metric(row, factor, key):
  """A row's metric at a factor; None where the encoding cannot represent that length."""
  value = row.get(factor)
  return value[key] if isinstance(value, dict) else None


def seed_values(per_seed: dict[str, list], name: str, factor, key) -> list[float | None]:
  return [metric(row, factor, key) for row in per_seed.get(name, [])]


def paired(a: Sequence[float | None], b: Sequence[float | None]) -> list[float]:
  """a_s - b_s for every seed s both have (the seeds are paired: same data order and init key)."""
  return [x - y for x, y in zip(a, b) if x is not None and y is not None]


def interval(values: Sequence[float]) -> dict[str, Any] | None:
  """report.mean_interval of per-seed values, None without any."""
  return report.mean_interval(values) if values else None


def cell(values: Sequence[float], digits: int = 3) -> str:
  """'mean [low, high]' of per-seed values (the 95% Student-t interval over seeds)."""
  iv = interval(values)
  if iv is None:
    return '-'
  if iv['n'] == 1:
    return f'{iv["mean"]:.{digits}f} (1 seed)'
  return f'{iv["mean"]:.{digits}f} [{iv["low"]:.{digits}f}, {iv["high"]:.{digits}f}]'


def contenders(config, names) -> list[str]:
  """The contenders the claim encoding is compared with (itself excluded), among `names`."""
  c = config.checks
  return [n for n in c.contenders if n != c.encoding and n in names]


def claim_gaps(config, per_seed: dict[str, list], factors) -> dict[int, dict[str, Any]]:
  """{factor: {'encoding': per-seed losses, 'gap': per-seed gaps, 'best': per-seed best contender,
  'below': {X: per-seed paired differences}}} (the numbers the checks read)."""
  c, key = config.checks, config.metric
  others = contenders(config, per_seed)
  out = {}
  for factor in factors:
    own = seed_values(per_seed, c.encoding, factor, key)
    gaps, best = [], []
    for s, value in enumerate(own):
      scores = {o: metric(per_seed[o][s], factor, key) for o in others if len(per_seed[o]) > s}
      scores = {o: v for o, v in scores.items() if v is not None}
      if value is None or not scores:
        continue
      name = min(scores, key=scores.get)
      gaps.append(round(value - scores[name], 5))
      best.append(name)
    out[factor] = {
        'encoding': own, 'gap': gaps, 'best': best,
        'below': {x: [round(d, 5) for d in paired(own, seed_values(per_seed, x, factor, key))]
                  for x in c.below if x in per_seed}}
  return out


def _check(name, values, *, compare, threshold, note='', informational=False, empty=''):
  iv = interval(values)
  if iv is None:
    return report.check(name, float('nan'), compare=compare, threshold=threshold,
                        evidence='interval', inconclusive=empty or 'no seed has a value',
                        note=note, informational=informational)
  return report.check(name, round(iv['mean'], 4), compare=compare, threshold=threshold,
                      interval=(round(iv['low'], 4), round(iv['high'], 4)), note=note,
                      informational=informational)


def claim_checks(config, gaps: dict[int, dict[str, Any]], *, informational: bool = False,
                 label: str = '') -> list[dict[str, Any]]:
  """Per factor: the gap to the best contender (<= margin) and one row per checks.below (< 0)."""
  c = config.checks
  rows = []
  for factor, g in gaps.items():
    seeds = ', '.join(f'{v:+.3f} ({b})' for v, b in zip(g['gap'], g['best']))
    rows.append(_check(
        f'{factor}x{label}: {c.encoding} minus the best contender, chosen per seed',
        g['gap'], compare='<=', threshold=c.margin, informational=informational,
        empty=f'no contender is representable at {factor}x',
        note=f'per seed: {seeds}; mean and 95% Student-t interval over {len(g["gap"])} seed(s)'))
    for other, diffs in g['below'].items():
      rows.append(_check(
          f'{factor}x{label}: {c.encoding} minus {other} (paired by seed)', diffs,
          compare='<', threshold=0.0, informational=informational,
          empty=f'{other} has no loss at {factor}x',
          note='per seed: ' + ', '.join(f'{d:+.3f}' for d in diffs)))
  return rows


def regime_gaps(config, regime_per_seed: dict[int, dict[str, list]]) -> dict[int, dict]:
  """{train length: claim_gaps at the regime's factors}, among the regime's encodings only (its
  contenders: config.checks.contenders among config.regime.encodings)."""
  return {length: claim_gaps(
      config, {n: v for n, v in per_seed.items() if n in config.regime.encodings},
      config.regime.factors) for length, per_seed in regime_per_seed.items()}


def regime_check(config, gaps_by_length: dict[int, dict[int, dict]]) -> dict[str, Any]:
  """Informational: does the gap at the regime's largest factor shrink from the shortest train
  length to the longest (difference of the two lengths' mean gaps, unpaired: one value)?"""
  factor = max(config.regime.factors)
  lengths = sorted(gaps_by_length)
  means = {n: interval(gaps_by_length[n][factor]['gap']) for n in lengths}
  text = ', '.join(f'{n}: {cell(gaps_by_length[n][factor]["gap"])}' for n in lengths)
  first, last = means[lengths[0]], means[lengths[-1]]
  value = (round(last['mean'] - first['mean'], 4) if first and last else float('nan'))
  return report.check(
      f'regime: change of {config.checks.encoding} minus the best at {factor}x from train length '
      f'{lengths[0]} to {lengths[-1]}', value, compare='<', threshold=0.0, informational=True,
      note=f'the gap by train length (mean [95% interval] over seeds): {text}; the paper trains '
           'at 2048: does the gap close as the train length grows?')


# ---------------------------------------------------------------------------------------------
# The diagnosis: FIRE's rise past the train length is its growing normaliser.
# ---------------------------------------------------------------------------------------------
def _shrink(learned_rows: list[dict], factor) -> str:
  values = [layer['normaliser_scale'][str(factor)] for per in learned_rows for layer in
            per.values()]
  if not values:
    return '-'
  low, high = min(values), max(values)
  return f'{low:.2f}' if high - low < 0.005 else f'{low:.2f}-{high:.2f}'


def diagnosis_table(config, per_seed: dict[str, list], learned: dict[str, list]):
  """'Diagnosis: ...': per diagnosed encoding and long factor, paired over seeds, the loss the
  growing normaliser adds (the encoding minus the same weights with the normaliser frozen at row
  T-1), each one's rise from 1x, the frozen weights against the best contender, and the learned
  shrink of the last row's inputs."""
  key = config.metric
  factors = [f for f in config.eval_factors if f != 1]
  others = contenders(config, per_seed)
  rows = []
  for name in config.diagnose:
    frozen = name + diagnostics.FROZEN
    if name not in per_seed or frozen not in per_seed:
      continue
    own = {f: seed_values(per_seed, name, f, key) for f in config.eval_factors}
    still = {f: seed_values(per_seed, frozen, f, key) for f in config.eval_factors}
    base = 1 if 1 in own else min(own)

    def best_per_seed(f, n_seeds):
      out = []
      for s in range(n_seeds):
        scores = [metric(per_seed[o][s], f, key) for o in others if len(per_seed[o]) > s]
        scores = [v for v in scores if v is not None]
        out.append(min(scores) if scores else None)
      return out

    rows.append([f'{name} minus {name} with the normaliser frozen (what the growing normaliser '
                 'adds)'] + [cell(paired(own[f], still[f])) for f in factors])
    rows.append([f'{name}: loss at Nx minus at {base}x'] +
                [cell(paired(own[f], own[base])) for f in factors])
    rows.append([f'{name}, normaliser frozen: loss at Nx minus at {base}x'] +
                [cell(paired(still[f], still[base])) for f in factors])
    if others:
      rows.append([f'{name}, normaliser frozen, minus the best contender (per seed)'] +
                  [cell(paired(still[f], best_per_seed(f, len(still[f])))) for f in factors])
      rows.append([f'{name} minus the best contender (per seed)'] +
                  [cell(paired(own[f], best_per_seed(f, len(own[f])))) for f in factors])
    rows.append([f'{name}: the last row\'s inputs shrunk to (learned, all layers and seeds)'] +
                [_shrink(learned.get(name, []), f) for f in factors])
  if not rows:
    return None
  n = max(len(v) for v in per_seed.values())
  return report.table(
      f'Diagnosis: the growing normaliser psi(max(L, i)) lifts FIRE\'s loss past the train length '
      f'(mean [95% interval] over up to {n} seeds, paired by seed; {key.replace("_", " ")} loss)',
      ['quantity'] + [f'{f}x ({f * config.train_length})' for f in factors], rows,
      note='The frozen rows are an eval-only diagnostic (the same weights, psi(max(L, i)) held at '
           'row T-1), not an encoding. FIRE rises and its frozen twin stays flat: the rise is the '
           'normaliser shrinking every input by the factor in the last row.')


def regime_table(config, regime_per_seed: dict[int, dict[str, list]],
                 regime_learned: dict[int, dict[str, list]]):
  """'Diagnosis: the regime trend': by train length, at the regime's largest factor, the gap to
  the best regime contender, the loss the normaliser adds, and the learned input shrink."""
  key, factor = config.metric, max(config.regime.factors)
  name = config.checks.encoding
  rows = []
  for length in sorted(regime_per_seed):
    per_seed = regime_per_seed[length]
    gaps = regime_gaps(config, {length: per_seed})[length][factor]
    frozen = paired(seed_values(per_seed, name, factor, key),
                    seed_values(per_seed, name + diagnostics.FROZEN, factor, key))
    best = sorted(set(gaps['best']))
    rows.append([length, len(per_seed.get(name, [])), cell(gaps['gap']), ', '.join(best) or '-',
                 cell(frozen) if frozen else '-',
                 _shrink(regime_learned.get(length, {}).get(name, []), factor)])
  return report.table(
      f'Diagnosis: the regime trend, {name} at {factor}x by train length (mean [95% interval] '
      'over seeds)',
      ['train length', 'seeds', f'{name} minus the best', 'best', f'{name} minus frozen',
       'input shrink'], rows,
      note='The paper trains at 2048 (input shrink about 0.79 at 4x with c = 0.1, L = 512).')

"""Deferral rules and deferral curves for two-model (and K-model) cascades.

Everything takes numpy arrays of probabilities from any model. A deferral *score* ranks inputs:
the higher, the sooner the input is sent to the second model.

    curve = deferral_curve(confidence_score(p1), correct1, correct2)
    curve.area, curve.accuracy_at(0.2)

Curves are exact at every deferral rate k/N, k = 0..N, computed by sorting; inputs whose scores
tie are deferred as a group in random order, so the curve is linear across a tie (its expectation)
rather than depending on an arbitrary tie-break.
"""

from __future__ import annotations

import dataclasses

import numpy as np

SUM_TOLERANCE = 1e-3


def check_probs(probs, name: str = 'probs', num_classes: int | None = None) -> np.ndarray:
  """Raises ValueError unless `probs` is (N, C), finite, non-negative, rows summing to one."""
  probs = np.asarray(probs, np.float64)
  if probs.ndim != 2:
    raise ValueError(f'{name} must have shape (examples, classes), got {probs.shape}.')
  if probs.shape[0] == 0:
    raise ValueError(f'{name} is empty: there are no examples.')
  if num_classes is not None and probs.shape[1] != num_classes:
    raise ValueError(f'{name} has {probs.shape[1]} classes, expected {num_classes}.')
  if not np.all(np.isfinite(probs)) or probs.min() < 0:
    raise ValueError(f'{name} must be finite and non-negative (got logits?).')
  sums = probs.sum(1)
  worst = int(np.argmax(np.abs(sums - 1)))
  if abs(sums[worst] - 1) > SUM_TOLERANCE:
    raise ValueError(f'{name} rows must sum to one; row {worst} sums to {sums[worst]:.4f} '
                     '(apply a softmax first).')
  return probs


def check_labels(labels, num_examples: int, num_classes: int) -> np.ndarray:
  labels = np.asarray(labels)
  if labels.shape != (num_examples,):
    raise ValueError(f'labels must have shape ({num_examples},), got {labels.shape}.')
  if not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f'labels must be integers, got {labels.dtype}.')
  if labels.min() < 0 or labels.max() >= num_classes:
    raise ValueError(f'labels must be in [0, {num_classes}), got range '
                     f'[{labels.min()}, {labels.max()}].')
  return labels


def check_rate(rate: float) -> float:
  if not 0.0 <= rate <= 1.0:
    raise ValueError(f'A deferral rate must be in [0, 1], got {rate}.')
  return float(rate)


# ------------------------------------------------------------------------------------------------
# Confidence-based scores (higher = defer sooner).
# ------------------------------------------------------------------------------------------------
def confidence_score(probs) -> np.ndarray:
  """Defer when the maximum probability is low."""
  return -check_probs(probs).max(1)


def entropy_score(probs) -> np.ndarray:
  p = check_probs(probs)
  return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=1)


def margin_score(probs) -> np.ndarray:
  """Defer when the top two probabilities are close."""
  p = np.sort(check_probs(probs), axis=1)
  return -(p[:, -1] - p[:, -2]) if p.shape[1] > 1 else -p[:, -1]


def oracle_score(correct1, correct2) -> np.ndarray:
  """The true per-example gain of deferring: 1[h2 right] - 1[h1 right]."""
  return np.asarray(correct2, np.float64) - np.asarray(correct1, np.float64)


CONFIDENCE_RULES = {'confidence': confidence_score, 'entropy': entropy_score,
                    'margin': margin_score}


# ------------------------------------------------------------------------------------------------
# Deferral curves.
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class DeferralCurve:
  rates: np.ndarray     # (N + 1,): k / N
  accuracy: np.ndarray  # (N + 1,): cascade accuracy deferring the k highest-scored inputs

  @property
  def area(self) -> float:
    """Area under accuracy against deferral rate, over [0, 1]."""
    return float(np.trapezoid(self.accuracy, self.rates))

  def accuracy_at(self, rate) -> np.ndarray | float:
    rates = np.atleast_1d(np.asarray(rate, np.float64))
    for r in rates:
      check_rate(r)
    out = np.interp(rates, self.rates, self.accuracy)
    return float(out[0]) if np.ndim(rate) == 0 else out


def deferral_curve(score, correct1, correct2) -> DeferralCurve:
  """Accuracy of the cascade at every deferral rate when deferring by decreasing `score`."""
  score = np.asarray(score, np.float64)
  c1 = np.asarray(correct1, np.float64)
  c2 = np.asarray(correct2, np.float64)
  n = len(score)
  if n == 0:
    raise ValueError('Cannot build a deferral curve on an empty set.')
  if c1.shape != (n,) or c2.shape != (n,):
    raise ValueError(f'score, correct1 and correct2 must have the same length; got {score.shape}, '
                     f'{c1.shape}, {c2.shape}.')
  if not np.all(np.isfinite(score)):
    raise ValueError('Deferral scores must be finite.')
  order = np.argsort(-score, kind='stable')
  gain = (c2 - c1)[order]
  # Gain of deferring the first k, at the end of each tie group; linear inside a group.
  s = score[order]
  boundaries = np.concatenate([np.nonzero(np.diff(s) != 0)[0] + 1, [n]])
  cum = np.concatenate([[0.0], np.cumsum(gain)])
  ks = np.arange(n + 1)
  knots = np.concatenate([[0], boundaries])
  total_gain = np.interp(ks, knots, cum[knots])
  accuracy = (c1.sum() + total_gain) / n
  return DeferralCurve(rates=ks / n, accuracy=accuracy)


# ------------------------------------------------------------------------------------------------
# K-model cascades.
# ------------------------------------------------------------------------------------------------
def cascade_predict(probs_list, thresholds):
  """Model k answers when its max probability exceeds thresholds[k]; the last always answers.

  Returns (predictions (N,), the stage that answered each input (N,)).
  """
  probs_list = [check_probs(p, f'probs_list[{i}]') for i, p in enumerate(probs_list)]
  if len(thresholds) != len(probs_list) - 1:
    raise ValueError(f'{len(probs_list)} models need {len(probs_list) - 1} thresholds, got '
                     f'{len(thresholds)}.')
  n = probs_list[0].shape[0]
  stage = np.full(n, len(probs_list) - 1)
  undecided = np.ones(n, bool)
  for k, (p, c) in enumerate(zip(probs_list[:-1], thresholds)):
    take = undecided & (p.max(1) > c)
    stage[take] = k
    undecided &= ~take
  predictions = np.stack([p.argmax(1) for p in probs_list])[stage, np.arange(n)]
  return predictions, stage


def cascade_cost(stage, costs) -> float:
  """Mean cost per input when model k costs costs[k] and input stopping at stage s ran 0..s."""
  cumulative = np.cumsum(costs)
  return float(np.mean(cumulative[np.asarray(stage)]))


def choose_thresholds(probs_list, labels, costs, target_cost: float, grid: int = 21):
  """Per-stage thresholds (quantiles of each stage's confidence) maximising accuracy on held-out
  data subject to mean cost <= target_cost. Returns (thresholds, accuracy, cost)."""
  import itertools  # pylint: disable=g-import-not-at-top
  probs_list = [check_probs(p) for p in probs_list]
  labels = check_labels(labels, probs_list[0].shape[0], probs_list[0].shape[1])
  if len(costs) != len(probs_list):
    raise ValueError(f'Need one cost per model: {len(probs_list)} models, {len(costs)} costs.')
  if grid ** (len(probs_list) - 1) > 10**6:
    raise ValueError('Too many stages for a grid search; lower `grid`.')
  candidates = [np.concatenate([[-np.inf], np.quantile(p.max(1), np.linspace(0, 1, grid))])
                for p in probs_list[:-1]]
  best = None
  for thresholds in itertools.product(*candidates):
    preds, stage = cascade_predict(probs_list, thresholds)
    cost = cascade_cost(stage, costs)
    if cost > target_cost + 1e-12:
      continue
    acc = float(np.mean(preds == labels))
    if best is None or acc > best[1] or (acc == best[1] and cost < best[2]):
      best = (tuple(float(t) for t in thresholds), acc, cost)
  if best is None:
    raise ValueError(f'No thresholds reach a mean cost <= {target_cost}; the cheapest cascade '
                     f'costs {costs[0]}.')
  return best

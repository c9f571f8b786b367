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
import itertools

import numpy as np

from common import validate

SUM_TOLERANCE = validate.SUM_TOLERANCE


class CascadesInputError(validate.InputError):
  """An input the cascade library cannot use (a ValueError); the message names the argument."""


def check_probs(probs, name: str = 'probs', num_classes: int | None = None) -> np.ndarray:
  """`probs` as float64 (N, C): finite rows in [0, 1] summing to one (common.validate)."""
  return validate.probability_rows(probs, name, num_classes=num_classes,
                                   tolerance=SUM_TOLERANCE, error=CascadesInputError)


def check_probs_list(probs_list, names=None) -> list[np.ndarray]:
  """Checks each model's probabilities and that all share one (examples, classes) shape.

  Models that disagree on the classes (or examples) would otherwise be compared class id by class
  id as if their outputs meant the same thing; the error names every model's shape.
  """
  if isinstance(probs_list, np.ndarray) and probs_list.ndim == 2:
    raise CascadesInputError('Expected a list with one (examples, classes) probability array per '
                             f'model, got a single array of shape {probs_list.shape}.')
  probs_list = list(probs_list)
  if not probs_list:
    raise CascadesInputError('Expected one (examples, classes) probability array per model, got '
                             'none.')
  names = list(names) if names is not None else [f'probs_list[{i}]'
                                                 for i in range(len(probs_list))]
  probs_list = [check_probs(p, n) for p, n in zip(probs_list, names)]
  shapes = [p.shape for p in probs_list]
  for name, shape in zip(names[1:], shapes[1:]):
    if shape != shapes[0]:
      what = (f'{shape[1]} classes, expected {shapes[0][1]}' if shape[1] != shapes[0][1]
              else f'{shape[0]} examples, expected {shapes[0][0]}')
      listing = ', '.join(f'{n} {s}' for n, s in zip(names, shapes))
      raise CascadesInputError(f'{name} has {what} as in {names[0]}: every model must give '
                               'probabilities for the same examples and classes (one shape); '
                               f'got {listing}.')
  return probs_list


def check_labels(labels, num_examples: int, num_classes: int) -> np.ndarray:
  labels = np.asarray(labels)
  if labels.shape != (num_examples,):
    raise CascadesInputError(f'labels must have shape ({num_examples},), got {labels.shape}.')
  if not np.issubdtype(labels.dtype, np.integer):
    raise CascadesInputError(f'labels must be integers, got {labels.dtype}.')
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise CascadesInputError(f'labels must be in [0, {num_classes}), got range '
                             f'[{labels.min()}, {labels.max()}].')
  return labels


def check_correct(correct, name: str = 'correct', num_examples: int | None = None,
                  length_of: str = 'score') -> np.ndarray:
  """`correct` as float64 0/1 of shape (N,): one entry per example, 1 where the model was right.

  Raises CascadesInputError unless it is 1-D and boolean or exactly 0/1 valued. Predicted classes are the
  usual mistake: they would count as "correct" 2, 3, ... times and give accuracies above one.
  `num_examples` (with `length_of`, the array that fixed it) is the length expected.
  """
  return validate.zero_one(
      correct, name, what='0/1 correctness', num_examples=num_examples, length_of=length_of,
      hint=' Class ids? Pass `pred == labels`, e.g. `probs.argmax(1) == labels`.',
      error=CascadesInputError).astype(np.float64)


def check_score(score, name: str = 'score') -> np.ndarray:
  """A deferral score as float64 (N,): 1-D, non-empty, finite."""
  score = np.asarray(score)
  if score.ndim != 1:
    raise CascadesInputError(f'{name} must be 1-D, one deferral score per example, got shape '
                             f'{score.shape} (pass a score such as confidence_score(probs), '
                             'not the probabilities).')
  if score.shape[0] == 0:
    raise CascadesInputError(f'{name} is empty: cannot build a deferral curve on an empty set.')
  if not (np.issubdtype(score.dtype, np.number) or score.dtype == bool):
    raise CascadesInputError(f'{name} must be numeric, got dtype {score.dtype}.')
  score = score.astype(np.float64)
  if not np.all(np.isfinite(score)):
    raise CascadesInputError(f'Deferral scores must be finite; {name} has '
                             f'{int(np.sum(~np.isfinite(score)))} non-finite entries.')
  return score


def check_rate(rate: float) -> float:
  if not 0.0 <= rate <= 1.0:
    raise CascadesInputError(f'A deferral rate must be in [0, 1], got {rate}.')
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
  c1 = check_correct(correct1, 'correct1')
  return check_correct(correct2, 'correct2', len(c1), 'correct1') - c1


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
  """Accuracy of the cascade at every deferral rate when deferring by decreasing `score`.

  score: (N,) deferral scores; correct1, correct2: (N,) 0/1 correctness of h1 and h2
  (`probs.argmax(1) == labels`), not their predictions.
  """
  score = check_score(score)
  n = len(score)
  c1 = check_correct(correct1, 'correct1', n)
  c2 = check_correct(correct2, 'correct2', n)
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
  probs_list = check_probs_list(probs_list)
  return _predict(probs_list, _check_thresholds(thresholds, len(probs_list)))


def _check_thresholds(thresholds, num_models: int) -> np.ndarray:
  out = np.asarray(thresholds, np.float64)
  if out.shape != (num_models - 1,):
    raise CascadesInputError(f'{num_models} models need {num_models - 1} thresholds (a 1-D '
                             'sequence, the last model always answers), got shape '
                             f'{out.shape}.')
  if np.isnan(out).any():
    raise CascadesInputError(f'Thresholds must not be NaN (-inf: always answer), got {thresholds}.')
  return out


def _check_costs(costs, num_models: int) -> np.ndarray:
  out = np.asarray(costs, np.float64)
  if out.shape != (num_models,):
    raise CascadesInputError(f'Need one cost per model as a 1-D sequence: {num_models} models, '
                             f'costs of shape {out.shape}.')
  if not np.all(np.isfinite(out)) or out.min() < 0:
    raise CascadesInputError(f'Costs must be finite and non-negative, got {costs}.')
  return out


def _predict(probs_list, thresholds):
  """cascade_predict on checked inputs (choose_thresholds calls it for every grid point)."""
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
  """Mean cost per input when model k costs costs[k] and input stopping at stage s ran 0..s.

  stage: (N,) integer stages in [0, len(costs)), as cascade_predict returns.
  """
  costs = np.asarray(costs, np.float64)
  if costs.ndim != 1 or costs.size == 0:
    raise CascadesInputError(f'costs must be a non-empty 1-D sequence, one per model, got shape '
                             f'{costs.shape}.')
  costs = _check_costs(costs, costs.size)
  stage = np.asarray(stage)
  if stage.ndim != 1 or stage.size == 0 or not np.issubdtype(stage.dtype, np.integer):
    raise CascadesInputError('stage must be a non-empty 1-D integer array (the stage that '
                             f'answered each input), got shape {stage.shape} and dtype '
                             f'{stage.dtype}.')
  if stage.min() < 0 or stage.max() >= len(costs):
    raise CascadesInputError(f'stage must be in [0, {len(costs)}) for {len(costs)} costs, got '
                             f'range [{stage.min()}, {stage.max()}].')
  return _cost(stage, costs)


def _cost(stage, costs) -> float:
  return float(np.mean(np.cumsum(costs)[stage]))


def choose_thresholds(probs_list, labels, costs, target_cost: float, grid: int = 21):
  """Per-stage thresholds (quantiles of each stage's confidence) maximising accuracy on held-out
  data subject to mean cost <= target_cost. Returns (thresholds, accuracy, cost)."""
  probs_list = check_probs_list(probs_list)
  labels = check_labels(labels, probs_list[0].shape[0], probs_list[0].shape[1])
  costs = _check_costs(costs, len(probs_list))
  if not np.isfinite(target_cost):
    raise CascadesInputError(f'target_cost must be finite, got {target_cost}.')
  if int(grid) != grid or grid < 1:
    raise CascadesInputError('grid must be a positive integer (quantiles per stage), got '
                             f'{grid!r}.')
  grid = int(grid)
  if grid ** (len(probs_list) - 1) > 10**6:
    raise CascadesInputError('Too many stages for a grid search; lower `grid`.')
  candidates = [np.concatenate([[-np.inf], np.quantile(p.max(1), np.linspace(0, 1, grid))])
                for p in probs_list[:-1]]
  best = None
  for thresholds in itertools.product(*candidates):
    preds, stage = _predict(probs_list, thresholds)
    cost = _cost(stage, costs)
    if cost > target_cost + 1e-12:
      continue
    acc = float(np.mean(preds == labels))
    if best is None or acc > best[1] or (acc == best[1] and cost < best[2]):
      best = (tuple(float(t) for t in thresholds), acc, cost)
  if best is None:
    raise CascadesInputError(f'No thresholds reach a mean cost <= {target_cost}; the cheapest '
                             f'cascade costs {costs[0]}.')
  return best

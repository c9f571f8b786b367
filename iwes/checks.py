"""Input checks shared by the library: each raises IwesInputError (a common.validate.InputError,
so a ValueError) before compute.

Probabilities are (N, C) rows in [0, 1] summing to one (class ids or logits are refused with a
hint), labels are integer class ids in range, sampling probabilities are in [0, 1], and the
selection's sizes fit (a budget no larger than the pool, a seed set no larger than the budget).
"""

from __future__ import annotations

import numpy as np

from common import validate

SUM_TOLERANCE = validate.SUM_TOLERANCE


class IwesInputError(validate.InputError):
  """An input the library cannot use; the message names the argument and what is wrong (the
  common InputError, so a caller can catch any library's bad input as one kind)."""


def _numeric(arr: np.ndarray, name: str) -> None:
  if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
    raise IwesInputError(f'{name} must be numeric, got dtype {arr.dtype}.')


def check_probs(probs, name: str = 'probs', num_examples: int | None = None) -> np.ndarray:
  """(N, C) class probabilities as float64: finite, in [0, 1], each row summing to one
  (common.validate.probability_rows), with at least two classes; 1-D class ids are refused with
  a hint."""
  arr = np.asarray(probs)
  if arr.ndim == 1 and np.issubdtype(arr.dtype, np.integer):
    raise IwesInputError(f'{name} looks like class ids (1-D integers, shape {arr.shape}); '
                         'expected class probabilities of shape (examples, classes).')
  if arr.ndim == 2 and arr.shape[1] < 2:
    raise IwesInputError(f'{name} has shape {arr.shape}: need at least two classes.')
  return validate.probability_rows(arr, name, num_examples=num_examples,
                                   tolerance=SUM_TOLERANCE, error=IwesInputError)


def check_pair(probs_f, probs_g) -> tuple[np.ndarray, np.ndarray]:
  """Two models' probabilities on the same examples: the same (N, C) shape."""
  f = check_probs(probs_f, 'probs_f')
  g = check_probs(probs_g, 'probs_g')
  if f.shape != g.shape:
    raise IwesInputError(f'probs_f and probs_g must have the same shape (the two models on the '
                         f'same examples), got {f.shape} and {g.shape}.')
  return f, g


def check_labels(labels, num_examples: int, num_classes: int) -> np.ndarray:
  """(N,) integer class ids in [0, num_classes)."""
  arr = np.asarray(labels)
  if arr.ndim != 1 or arr.shape[0] != num_examples:
    raise IwesInputError(f'labels must have shape ({num_examples},), one class id per example, '
                         f'got {arr.shape}.')
  if not np.issubdtype(arr.dtype, np.integer):
    raise IwesInputError(f'labels must be integer class ids, got dtype {arr.dtype}.')
  if arr.min() < 0 or arr.max() >= num_classes:
    raise IwesInputError(f'labels must be in [0, {num_classes}), got range '
                         f'[{arr.min()}, {arr.max()}].')
  return arr.astype(np.int64)


def check_sampling_probability(p, name: str = 'p', num_examples: int | None = None) -> np.ndarray:
  """(N,) probabilities of keeping each example, in [0, 1]."""
  arr = np.asarray(p)
  _numeric(arr, name)
  if arr.ndim != 1:
    raise IwesInputError(f'{name} must be 1-D, one probability per example, got shape '
                         f'{arr.shape}.')
  if num_examples is not None and arr.shape[0] != num_examples:
    raise IwesInputError(f'{name} has {arr.shape[0]} entries, expected {num_examples}.')
  arr = arr.astype(np.float64)
  if not np.all(np.isfinite(arr)) or (arr.size and (arr.min() < 0 or arr.max() > 1)):
    raise IwesInputError(f'{name} must be probabilities in [0, 1]' + (
        f', got range [{np.nanmin(arr):.4g}, {np.nanmax(arr):.4g}].' if arr.size else '.'))
  return arr


def check_p_min(p_min) -> float:
  if isinstance(p_min, bool) or not isinstance(p_min, (int, float, np.floating)) or not (
      0 < float(p_min) <= 1):
    raise IwesInputError(f'p_min={p_min!r}: expected a number in (0, 1] (the least sampling '
                         'probability; it bounds the weights 1/p by 1/p_min).')
  return float(p_min)


def check_w_max(w_max) -> float:
  """The weight cap: a number >= 1, or inf for no cap."""
  if isinstance(w_max, bool) or not isinstance(w_max, (int, float, np.floating)) or not (
      float(w_max) >= 1):
    raise IwesInputError(f'w_max={w_max!r}: expected a number >= 1 (weights are 1/p >= 1; a cap '
                         'below 1 would shrink every weight); use inf for no cap.')
  return float(w_max)


def check_count(value, name: str, minimum: int = 1) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise IwesInputError(f'{name}={value!r}: expected a whole number >= {minimum}.')
  return int(value)


def check_sizes(pool_size: int, seed_size: int, batch_size: int, budget: int) -> int:
  """The number of rounds (budget - seed_size) / batch_size, once the sizes are known to fit:
  the budget no larger than the pool, the seed set no larger than the budget, whole rounds."""
  pool_size = check_count(pool_size, 'pool size')
  seed_size = check_count(seed_size, 'seed_size')
  batch_size = check_count(batch_size, 'batch_size')
  budget = check_count(budget, 'budget')
  if budget > pool_size:
    raise IwesInputError(f'The label budget ({budget}) is larger than the pool ({pool_size} '
                         'examples).')
  if seed_size > budget:
    raise IwesInputError(f'The seed set ({seed_size} examples) is larger than the label budget '
                         f'({budget}).')
  rounds, rest = divmod(budget - seed_size, batch_size)
  if rest:
    raise IwesInputError(f'budget - seed_size = {budget - seed_size} is not a whole number of '
                         f'batches of {batch_size}.')
  return rounds

"""Input checks shared by the library: each raises AbstainInputError (a
common.validate.InputError, so a ValueError) before compute.

Every public function of the package takes numpy arrays (or array-likes) and checks them here:
scores one per example and finite, probabilities in rows that sum to one, 0/1 flags that are not
class ids, budgets and costs in [0, 1], arrays of matching lengths.
"""

from __future__ import annotations

import numpy as np

from common import validate

SUM_TOLERANCE = validate.SUM_TOLERANCE


class AbstainInputError(validate.InputError):
  """An input the library cannot use; the message names the argument and what is wrong."""


def _numeric(arr: np.ndarray, name: str) -> None:
  if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
    raise AbstainInputError(f'{name} must be numeric, got dtype {arr.dtype}.')


def check_scores(score, name: str = 'score', num_examples: int | None = None,
                 length_of: str = 'the first array') -> np.ndarray:
  """A score per example as float64 (N,): 1-D, non-empty, finite, of length `num_examples`."""
  arr = np.asarray(score)
  _numeric(arr, name)
  if arr.ndim != 1:
    raise AbstainInputError(
        f'{name} must be 1-D, one score per example, got shape {arr.shape} (pass a score such '
        'as scores.msp(probs), not the probabilities or logits).')
  if arr.shape[0] == 0:
    raise AbstainInputError(f'{name} is empty: there are no examples.')
  if num_examples is not None and arr.shape[0] != num_examples:
    raise AbstainInputError(f'{name} has {arr.shape[0]} entries, expected {num_examples} (the '
                            f'length of {length_of}): one per example.')
  arr = arr.astype(np.float64)
  bad = ~np.isfinite(arr)
  if bad.any():
    raise AbstainInputError(f'{name} must be finite; it has {int(bad.sum())} NaN or infinite '
                            f'entries (first at index {int(np.argmax(bad))}).')
  return arr


def check_nonnegative(values, name: str, num_examples: int | None = None,
                      length_of: str = 'the first array') -> np.ndarray:
  """Finite, non-negative scores (a density ratio)."""
  arr = check_scores(values, name, num_examples, length_of)
  if arr.min() < 0:
    raise AbstainInputError(f'{name} must be non-negative (a density ratio), got minimum '
                            f'{arr.min():.4g}.')
  return arr


def check_probability(values, name: str, num_examples: int | None = None,
                      length_of: str = 'the first array') -> np.ndarray:
  """Per-example probabilities in [0, 1] (a binary classifier's P(outlier | x), a max prob)."""
  arr = check_scores(values, name, num_examples, length_of)
  if arr.min() < 0 or arr.max() > 1:
    raise AbstainInputError(f'{name} must be probabilities in [0, 1], got range '
                            f'[{arr.min():.4g}, {arr.max():.4g}] (logits? apply a sigmoid or '
                            'softmax first).')
  return arr


def check_probs(probs, name: str = 'probs', num_examples: int | None = None) -> np.ndarray:
  """(N, C) class probabilities as float64: finite rows in [0, 1] summing to one."""
  return validate.probability_rows(probs, name, num_examples=num_examples,
                                   tolerance=SUM_TOLERANCE, error=AbstainInputError)


def check_logits(logits, name: str = 'logits') -> np.ndarray:
  arr = np.asarray(logits)
  _numeric(arr, name)
  if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
    raise AbstainInputError(f'{name} must have shape (examples, classes) with both non-zero, '
                            f'got {arr.shape}.')
  arr = arr.astype(np.float64)
  if not np.all(np.isfinite(arr)):
    raise AbstainInputError(f'{name} must be finite; it has '
                            f'{int(np.sum(~np.isfinite(arr)))} NaN or infinite entries.')
  return arr


def check_flags(flags, name: str, num_examples: int | None = None,
                length_of: str = 'the scores', hint: str = '') -> np.ndarray:
  """0/1 flags as bool (N,). Class ids (0, 1, 2, ...) or soft values are refused."""
  return validate.zero_one(flags, name, num_examples=num_examples, length_of=length_of,
                           hint=hint, error=AbstainInputError)


def check_outlier_flags(is_outlier, num_examples: int | None = None,
                        length_of: str = 'the scores') -> np.ndarray:
  return check_flags(is_outlier, 'is_outlier', num_examples, length_of,
                     hint=' Class ids? Pass `np.isin(labels, outlier_classes)`.')


def check_correct(correct, num_examples: int | None = None,
                  length_of: str = 'the scores') -> np.ndarray:
  return check_flags(correct, 'correct', num_examples, length_of,
                     hint=' Predicted classes? Pass `probs.argmax(1) == labels`.')


def check_unit(value, name: str, open_low: bool = False, open_high: bool = False) -> float:
  """A scalar in [0, 1] (a cost, a budget, a fraction); ends excluded where asked."""
  arr = np.asarray(value)
  if arr.ndim != 0 or not (np.issubdtype(arr.dtype, np.number)):
    raise AbstainInputError(f'{name} must be a number, got {value!r}.')
  v = float(arr)
  low_ok = v > 0 if open_low else v >= 0
  high_ok = v < 1 if open_high else v <= 1
  if not np.isfinite(v) or not (low_ok and high_ok):
    interval = f'{"(" if open_low else "["}0, 1{")" if open_high else "]"}'
    raise AbstainInputError(f'{name} must be in {interval}, got {v}.')
  return v


def check_budget(budget) -> float:
  """An abstention budget: the largest fraction of the test mixture that may be rejected."""
  return check_unit(budget, 'budget (the abstention rate b_rej)')


def check_budgets(budgets) -> np.ndarray:
  arr = np.atleast_1d(np.asarray(budgets, dtype=np.float64))
  if arr.ndim != 1 or arr.size == 0:
    raise AbstainInputError(f'budgets must be a non-empty 1-D list, got shape {arr.shape}.')
  for b in arr:
    check_budget(b)
  return arr


def check_cost(c_fn) -> float:
  """c_fn: the cost of accepting an outlier; (1 - c_fn) that of a misclassified inlier."""
  return check_unit(c_fn, 'c_fn (the cost of accepting an outlier)')


def check_both_groups(is_outlier: np.ndarray, what: str) -> None:
  if is_outlier.all() or not is_outlier.any():
    kind = 'inliers' if is_outlier.all() else 'outliers'
    raise AbstainInputError(f'{what} needs both inliers and outliers; is_outlier has no {kind}.')

"""Input checks that several papers share: numpy arrays refused before compute, with a message
that says what was expected (and the usual mistake), raised as the caller's error class.

    probs = validate.probability_rows(probs, 'probs1', num_classes=10)   # (N, C) float64
    flags = validate.zero_one(is_outlier, 'is_outlier', num_examples=len(probs))

A paper's own error class subclasses InputError (a ValueError), so callers can catch any
library's bad input as one kind, and its own tests keep matching its class.
Config fields are checked by common.config_lib (`config_lib.whole`, `config_lib.real`, ...).
"""

from __future__ import annotations

import numpy as np

# How far a row of probabilities may sum from one (float32 softmaxes sum within ~1e-6; a row off
# by more than this is not a distribution: logits, a missing class, a mislabelled column).
SUM_TOLERANCE = 1e-3


class InputError(ValueError):
  """An array argument that a library cannot use; the message names the argument and what is
  wrong with it."""


def _first(bad: np.ndarray) -> str:
  """'row i' for the first True of `bad`, and how many there are when more than one."""
  count = int(bad.sum())
  first = int(np.argmax(bad))
  return f'row {first}' + (f' (and {count - 1} more)' if count > 1 else '')


def probability_rows(probs, name: str = 'probs', *, num_examples: int | None = None,
                     num_classes: int | None = None, length_of: str = '',
                     tolerance: float = SUM_TOLERANCE,
                     error: type[Exception] = InputError) -> np.ndarray:
  """`probs` as float64 (N, C): one probability distribution over the classes per example.

  Refused, with `name` and the first bad row in the message: a non-numeric array, a shape other
  than (examples, classes), no examples, `num_examples` rows or `num_classes` columns not met,
  NaN or infinite entries, entries outside [0, 1], rows whose sum is further than `tolerance`
  from one (logits or unnormalised scores are the usual mistake; the message says so).
  `length_of` names what fixed `num_examples` (e.g. 'the labels').
  """
  arr = np.asarray(probs)
  if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
    raise error(f'{name} must be numeric probabilities, got dtype {arr.dtype}.')
  if arr.ndim != 2:
    raise error(f'{name} must have shape (examples, classes), one row of class probabilities '
                f'per example, got {arr.shape}.')
  if arr.shape[0] == 0:
    raise error(f'{name} is empty: there are no examples.')
  if num_examples is not None and arr.shape[0] != num_examples:
    of = f' (the length of {length_of})' if length_of else ''
    raise error(f'{name} has {arr.shape[0]} examples, expected {num_examples}{of}.')
  if num_classes is not None and arr.shape[1] != num_classes:
    raise error(f'{name} has {arr.shape[1]} classes, expected {num_classes}.')
  arr = arr.astype(np.float64)
  bad = ~np.isfinite(arr).all(1)
  if bad.any():
    raise error(f'{name} must be finite; {_first(bad)} has NaN or infinite entries.')
  bad = ((arr < 0) | (arr > 1)).any(1)
  if bad.any():
    row = arr[int(np.argmax(bad))]
    raise error(f'{name} must be probabilities in [0, 1] (non-negative, at most one); '
                f'{_first(bad)} has values in [{row.min():.4g}, {row.max():.4g}] (logits? apply '
                'a softmax first).')
  sums = arr.sum(1)
  bad = np.abs(sums - 1) > tolerance
  if bad.any():
    raise error(f'{name} rows must sum to one; {_first(bad)} sums to '
                f'{sums[int(np.argmax(bad))]:.4f}, more than {tolerance:g} from one (logits? '
                'apply a softmax first).')
  return arr


def zero_one(values, name: str, *, what: str = '0/1 flags', num_examples: int | None = None,
             length_of: str = 'the scores', hint: str = '',
             error: type[Exception] = InputError) -> np.ndarray:
  """`values` as a bool array of shape (N,): 1-D, boolean or exactly 0/1 valued.

  Class ids (0, 1, 2, ...) and soft values are the usual mistake (a predicted class where 0/1
  correctness is wanted would count as "correct" 2, 3, ... times); they are refused with `hint`.
  `num_examples` (with `length_of`, the array that fixed it) is the length expected.
  """
  arr = np.asarray(values)
  if arr.ndim != 1:
    raise error(f'{name} must be 1-D {what}, one per example, got shape {arr.shape}.')
  if num_examples is not None and arr.shape[0] != num_examples:
    raise error(f'{name} has {arr.shape[0]} entries, expected {num_examples} (the length of '
                f'{length_of}): one per example.')
  if arr.dtype != bool:
    numeric = np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ok = ((arr == 0) | (arr == 1)) if numeric else np.zeros(arr.shape, bool)
    if not ok.all():
      found = np.unique(arr[~ok])[:5].tolist()
      raise error(f'{name} must be {what} (boolean, or exactly 0 and 1), got values such as '
                  f'{found}.{hint}')
  return arr.astype(bool)

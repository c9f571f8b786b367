"""Input checks that several papers share: numpy arrays refused before compute, with a message
that says what was expected (and the usual mistake), raised as the caller's error class."""

from __future__ import annotations

import numpy as np


def zero_one(values, name: str, *, what: str = '0/1 flags', num_examples: int | None = None,
             length_of: str = 'the scores', hint: str = '',
             error: type[Exception] = ValueError) -> np.ndarray:
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

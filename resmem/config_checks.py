"""Config checks shared by resmem's two experiments: numbers, names, the tuning grids, the k-NN.

Each helper reads only the values given and raises common.config_lib.ConfigError naming the full
dotted field (e.g. `tune.ks=(0, 4)`) and what it expects.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

from common.config_lib import ConfigError
from resmem import kernels


def _is_number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def whole(value, field: str, minimum: int = 1) -> int:
  """A whole number >= minimum (a float like 3.0 is accepted as 3)."""
  if not _is_number(value) or not float(value).is_integer() or value < minimum:
    raise ConfigError(f'{field}={value!r}: expected a whole number >= {minimum}.')
  return int(value)


def optional_whole(value, field: str, minimum: int = 1) -> int | None:
  return None if value is None else whole(value, field, minimum)


def number(value, field: str, *, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False) -> float:
  """A finite number within [low, high] (an end `_open` excludes it)."""
  ok = _is_number(value) and math.isfinite(value)
  ok = ok and (low is None or (value > low if low_open else value >= low))
  ok = ok and (high is None or (value < high if high_open else value <= high))
  if not ok:
    lo = '' if low is None else ('(' if low_open else '[') + f'{low}'
    hi = '' if high is None else f'{high}' + (')' if high_open else ']')
    where = (f'in {lo}, {hi}' if low is not None and high is not None
             else f'{">" if low_open else ">="} {low}' if low is not None
             else f'{"<" if high_open else "<="} {high}')
    raise ConfigError(f'{field}={value!r}: expected a finite number {where}.')
  return float(value)


def text(value, field: str) -> str:
  if not isinstance(value, str) or not value:
    raise ConfigError(f'{field}={value!r}: expected a non-empty string.')
  return value


def flag(value, field: str) -> bool:
  if not isinstance(value, bool):
    raise ConfigError(f'{field}={value!r}: expected True or False.')
  return value


def sequence(value, field: str) -> Sequence[Any]:
  if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)) or not value:
    raise ConfigError(f'{field}={value!r}: expected a non-empty tuple.')
  return value


def names_in(names, field: str, available: Iterable[str], where: str) -> None:
  """Every name of `names` (a tuple) is a key of `where` (a dotted field)."""
  available = list(available)
  for name in sequence(names, field):
    if name not in available:
      raise ConfigError(f'{field} names {name!r}, which is not in {where} {available}.')


def tuning_grid(tune, field: str = 'tune', *, lambdas: bool = False) -> None:
  """ks (whole >= 1), sigmas (> 0 or None: uniform), temperatures (> 0), lambdas ([0, 1])."""
  for i, k in enumerate(sequence(tune.ks, f'{field}.ks')):
    whole(k, f'{field}.ks[{i}]')
  for i, sigma in enumerate(sequence(tune.sigmas, f'{field}.sigmas')):
    if sigma is not None and not (_is_number(sigma) and 0 < sigma < math.inf):
      raise ConfigError(f'{field}.sigmas[{i}]={sigma!r}: expected a finite number > 0 (or None: '
                        'uniform weights).')
  for i, t in enumerate(sequence(tune.temperatures, f'{field}.temperatures')):
    number(t, f'{field}.temperatures[{i}]', low=0, low_open=True)
  if lambdas:
    for i, lam in enumerate(sequence(tune.lambdas, f'{field}.lambdas')):
      number(lam, f'{field}.lambdas[{i}]', low=0, high=1)


def knn_options(knn, field: str, allowed: Sequence[str]) -> None:
  """The k-NN kernel's options: known names, blocks >= 1, a known mode, recall in (0, 1]."""
  for key in knn.keys():
    if key not in allowed:
      raise ConfigError(f'{field}.{key}: not a k-NN option; the kernel takes {list(allowed)}.')
  for key in ('query_block', 'db_block', 'group'):
    if key in knn:
      whole(knn[key], f'{field}.{key}')
  if knn.get('mode', 'exact') not in kernels.MODES:
    raise ConfigError(f'{field}.mode={knn.mode!r}: use one of {kernels.MODES}.')
  if 'recall_target' in knn:
    number(knn.recall_target, f'{field}.recall_target', low=0, high=1, low_open=True)

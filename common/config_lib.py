"""Config helpers: field checking with suggestions, durations turned into steps in one place, and
the field checks of the experiments' `check_config` (each names the dotted field and what was
expected):

    config_lib.whole(config, 'posthoc.steps', 1); config_lib.real(config, 'checks.margin', 0.0)
"""

from __future__ import annotations

import difflib
import math
import numbers
from typing import Iterable

import ml_collections
import numpy as np


class ConfigError(ValueError):
  """A config that cannot run; the message names the field and what is wrong."""


def _flat_keys(config: ml_collections.ConfigDict, prefix: str = '') -> list[str]:
  keys = []
  for key, value in config.items():
    name = f'{prefix}{key}'
    keys.append(name)
    if isinstance(value, ml_collections.ConfigDict):
      keys.extend(_flat_keys(value, name + '.'))
  return keys


def flatten(tree, prefix: str = '') -> dict:
  """{'optimizer.learning_rate': 1e-3, ...} from a nested dict (or ConfigDict)."""
  out = {}
  for key, value in tree.items():
    name = f'{prefix}{key}'
    if isinstance(value, (dict, ml_collections.ConfigDict)):
      out.update(flatten(value, name + '.'))
    else:
      out[name] = value
  return out


def closest(name: str, candidates: Iterable[str]) -> str:
  """' (did you mean X?)' for the nearest candidate, or '' when nothing is close."""
  match = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
  return f' (did you mean {match[0]!r}?)' if match else ''


def check_fields(config: ml_collections.ConfigDict,
                 reference: ml_collections.ConfigDict,
                 free: Iterable[str] = ()) -> None:
  """Raises ConfigError for a field of `config` that `reference` does not have.

  `free` lists sub-dicts whose contents are open (e.g. model kwargs that differ per model).
  """
  known = set(_flat_keys(reference))
  free = tuple(free)
  for key in _flat_keys(config):
    if key in known or any(key.startswith(f + '.') for f in free):
      continue
    raise ConfigError(f'Unknown config field {key!r}{closest(key, known)}.')


def set_fields(config: ml_collections.ConfigDict, **dotted) -> ml_collections.ConfigDict:
  """config with fields set by dotted name: set_fields(c, **{'optimizer.learning_rate': 1e-2})."""
  for key, value in dotted.items():
    target = config
    *path, last = key.split('.')
    for part in path:
      target = target[part]
    target[last] = value
  return config


def get_or_fail(config: ml_collections.ConfigDict, key: str):
  """config[key] with an error that suggests the closest existing field."""
  if key not in config:
    raise ConfigError(f'Config has no field {key!r}{closest(key, config.keys())}.')
  return config[key]


def num_steps(config: ml_collections.ConfigDict, prefix: str, num_examples: int | None,
              batch_size: int | None = None, default: int | None = None) -> int:
  """Turns `{prefix}_steps` or `{prefix}_epochs` (exactly one may be set) into a step count.

  Training code only ever sees steps; this is the one place epochs become steps.
  """
  steps = config.get(f'{prefix}_steps')
  epochs = config.get(f'{prefix}_epochs')
  if steps is not None and epochs is not None:
    raise ConfigError(f'Set only one of {prefix}_steps and {prefix}_epochs.')
  if steps is not None:
    return int(steps)
  if epochs is not None:
    batch_size = batch_size or config.batch_size
    if not num_examples:
      raise ConfigError(f'{prefix}_epochs needs the number of examples.')
    return max(1, int(round(float(epochs) * num_examples / batch_size)))
  if default is not None:
    return default
  raise ConfigError(f'Set {prefix}_steps or {prefix}_epochs.')


def _whole(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer()


# The loop's numeric fields and the least value each may take; checked before any compute.
LOOP_MINIMUMS = {
    'batch_size': 1,
    'total_steps': 1,
    'log_every_steps': 1,
    'eval_every_steps': 0,  # 0: evaluate only at the end
    'checkpoint_every_steps': 1,
    'keep_checkpoints': 1,
    'device_data_max_mb': 0,
    'eval_batch_size': 1,
}


def check_loop(config: ml_collections.ConfigDict, section: str = 'config') -> None:
  """Raises ConfigError for a training-loop field that would run wrongly or not at all.

  Without this, `keep_checkpoints=0` deletes every checkpoint, `checkpoint_every_steps=0` saves
  at every step, `total_steps=0` exits having trained nothing, `batch_size=0` divides by zero,
  `eval_batch_size=0` fails at the first evaluation (after training) and a negative learning rate
  climbs the loss to 1e10 and exits 0. The loop fields are shared by every paper: the fields
  checked are those present (`eval_batch_size`, `optimizer.learning_rate` when set).
  `section` names the section in the messages (e.g. 'finetune' for a paper's `config.finetune`).
  """
  for name, minimum in LOOP_MINIMUMS.items():
    value = config.get(name)
    if value is None:
      continue
    if not _whole(value) or value < minimum:
      raise ConfigError(f'{section}.{name}={value!r}: expected a whole number >= {minimum}.')
  epochs = config.get('total_epochs')
  if epochs is not None and (isinstance(epochs, bool) or not epochs > 0):
    raise ConfigError(f'{section}.total_epochs={epochs!r}: expected a number > 0.')
  optimizer = config.get('optimizer')
  if optimizer is not None and optimizer.get('learning_rate') is not None:
    lr = optimizer.learning_rate
    if (isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr)
        or lr <= 0):
      raise ConfigError(f'{section}.optimizer.learning_rate={lr!r}: expected a finite number > 0.')


# ------------------------------------------------------------------------------------------------
# Config fields, for the experiments' check_config: each reads one dotted field of the root
# config and raises common.config_lib.ConfigError naming it, with what was expected.
# ------------------------------------------------------------------------------------------------
def is_number(value) -> bool:
  """A finite real number (not a bool)."""
  return (isinstance(value, numbers.Real) and not isinstance(value, bool)
          and math.isfinite(value))


def field(config, name: str):
  """The value of the dotted field `name` of `config` (ConfigError naming it when absent)."""
  value = config
  for part in name.split('.'):
    if not hasattr(value, 'keys') or part not in value:
      raise ConfigError(f'{name}: the config has no such field.')
    value = value[part]
  return value


def whole(config, name: str, minimum: int) -> int:
  """A whole number >= minimum (a step count, a seed, a size)."""
  value = field(config, name)
  if not is_number(value) or not float(value).is_integer() or value < minimum:
    raise ConfigError(f'{name}={value!r}: expected a whole number >= {minimum}.')
  return int(value)


def real(config, name: str, low: float | None = None, high: float | None = None, *,
         open_low: bool = False, open_high: bool = False) -> float:
  """A finite number within [low, high] (an end excluded where asked; None: unbounded)."""
  value = field(config, name)
  ok = is_number(value)
  if ok and low is not None:
    ok = value > low if open_low else value >= low
  if ok and high is not None:
    ok = value < high if open_high else value <= high
  if not ok:
    bounds = (f'{"(" if open_low else "["}{"-inf" if low is None else low}, '
              f'{"inf" if high is None else high}{")" if open_high else "]"}')
    raise ConfigError(f'{name}={value!r}: expected a finite number in {bounds}.')
  return float(value)


def flag(config, name: str) -> bool:
  value = field(config, name)
  if not isinstance(value, (bool, np.bool_)):
    raise ConfigError(f'{name}={value!r}: expected True or False.')
  return bool(value)


def choice(config, name: str, choices):
  """One of `choices`; the message suggests the closest."""
  value = field(config, name)
  if value not in tuple(choices):
    hint = closest(str(value), [str(c) for c in choices])
    raise ConfigError(f'{name}={value!r}{hint}: use one of {tuple(choices)}.')
  return value


def whole_tuple(config, name: str, minimum: int, *, allow_empty: bool = False) -> tuple[int, ...]:
  """A sequence of whole numbers >= minimum (widths, depths, classes); non-empty unless asked."""
  value = field(config, name)
  if (not isinstance(value, (tuple, list)) or (not value and not allow_empty)
      or not all(is_number(v) and float(v).is_integer() and v >= minimum for v in value)):
    what = 'a' if allow_empty else 'a non-empty'
    raise ConfigError(f'{name}={value!r}: expected {what} sequence of whole numbers '
                                 f'>= {minimum}.')
  return tuple(int(v) for v in value)


def real_tuple(config, name: str, low: float, high: float) -> tuple[float, ...]:
  """A non-empty sequence of finite numbers in [low, high] (costs, budgets)."""
  value = field(config, name)
  if (isinstance(value, str) or not isinstance(value, (tuple, list)) or not value
      or not all(is_number(v) and low <= v <= high for v in value)):
    raise ConfigError(f'{name}={value!r}: expected a non-empty sequence of finite '
                                 f'numbers in [{low}, {high}].')
  return tuple(float(v) for v in value)


def choice_tuple(config, name: str, choices) -> tuple:
  """A non-empty sequence of distinct members of `choices`."""
  value = field(config, name)
  if isinstance(value, str) or not isinstance(value, (tuple, list)) or not value:
    raise ConfigError(f'{name}={value!r}: expected a non-empty sequence of '
                                 f'{tuple(choices)}.')
  for v in value:
    if v not in tuple(choices):
      hint = closest(str(v), [str(c) for c in choices])
      raise ConfigError(f'{name} has {v!r}{hint}: use {tuple(choices)}.')
  if len(set(value)) != len(value):
    raise ConfigError(f'{name}={value!r} lists an entry twice.')
  return tuple(value)

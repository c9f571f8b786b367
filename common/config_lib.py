"""Config helpers: field checking with suggestions, and durations turned into steps in one place."""

from __future__ import annotations

import difflib
import math
from typing import Iterable

import ml_collections


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

"""common.ensemble's inputs, checked before any compute, and the data order of its models.

Everything here runs on the host on numpy arrays: a bad weight row, label or starting parameter
stops the run before anything is compiled, with a message that names the input and the fix.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from common import config_lib

# The batch entry that carries model m's own values to the loss: {'index': m, 'step': k, and
# each of train_ensemble's model_scalars}. No array may take this name.
MODEL_KEY = 'model'
RESERVED_SCALARS = ('index', 'step')


class EnsembleError(ValueError):
  """Ensemble inputs that cannot train as asked; the message says what was expected."""


@dataclasses.dataclass
class Inputs:
  """What train_ensemble trains on, checked (see check_inputs)."""
  num_models: int
  model_axis: str
  chunk_size: int                       # 0: chosen by common.ensemble_plan
  num_examples: int
  arrays: dict[str, np.ndarray]
  weights: np.ndarray                   # (M, N) float32
  model_arrays: dict[str, np.ndarray]   # {name: (M, N, ...)}
  model_scalars: dict[str, np.ndarray]  # {name: (M,)}
  init_params: Any                      # every leaf (M, ...), or None
  order: 'EnsembleOrder'
  total_steps: int
  nonfinite: dict[str, np.ndarray]      # {input name: (M, N) bool: model m sees a NaN/inf there}


def ensemble_config(config) -> tuple[int, str, int]:
  """(num_models, model_axis, chunk_size) of config.ensemble, checked."""
  section = config_lib.get_or_fail(config, 'ensemble')
  num_models = section.get('num_models')
  axis = section.get('model_axis', 'model')
  chunk = section.get('chunk_size', 0) or 0
  if isinstance(num_models, bool) or not isinstance(num_models, int) or num_models < 1:
    raise config_lib.ConfigError(f'ensemble.num_models={num_models!r}: expected a whole number '
                                 '>= 1.')
  if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 0:
    raise config_lib.ConfigError(f'ensemble.chunk_size={chunk!r}: expected 0 (chosen) or a '
                                 'whole number >= 1.')
  _check_no_parameter_sharding(config)
  return num_models, axis, chunk


# What common.ensemble does with the loop's sharding fields: every model whole on the devices of
# its slice of `ensemble.model_axis`, the batch over the other axes ('data'; 'replicated' the same
# for a model's state). A per-model parameter sharding (FSDP, tensor) is not built here.
ENSEMBLE_SHARDINGS = ('data', 'replicated')


def _check_no_parameter_sharding(config) -> None:
  """Refuses loop fields that would shard each model's parameters, which the ensemble would
  otherwise ignore (a config that reads as FSDP while each device holds whole models)."""
  sharding = config.get('sharding', 'data')
  if config.get('sharding_rules'):
    raise config_lib.ConfigError(
        f'sharding_rules={config.sharding_rules!r}: common.ensemble does not shard a model\'s '
        'parameters (each model is whole on the devices of its slice of ensemble.model_axis); '
        'leave sharding_rules empty.')
  if sharding not in ENSEMBLE_SHARDINGS:
    raise config_lib.ConfigError(
        f'sharding={sharding!r}: common.ensemble does not shard a model\'s parameters (each model '
        'is whole on the devices of its slice of ensemble.model_axis, the batch over the other '
        f'axes); use one of {ENSEMBLE_SHARDINGS}, or spread the models over more devices '
        '(ensemble.model_axis) to divide their state.')


def check_weights(weights, num_models: int, num_examples: int) -> np.ndarray:
  """(M, N) non-negative finite float32 weights; every model sees at least one example."""
  if weights is None:
    return np.ones((num_models, num_examples), np.float32)
  weights = np.asarray(weights)
  if weights.dtype == bool:
    weights = weights.astype(np.float32)
  if weights.shape != (num_models, num_examples):
    raise EnsembleError(f'weights has shape {weights.shape}; expected (num_models, num_examples) '
                        f'= ({num_models}, {num_examples}): one row per model.')
  if not np.issubdtype(weights.dtype, np.number):
    raise EnsembleError(f'weights must be numbers (or bool masks), not {weights.dtype}.')
  weights = weights.astype(np.float32)
  if not np.all(np.isfinite(weights)) or np.any(weights < 0):
    raise EnsembleError('weights must be finite and >= 0 (0: the model never sees the example).')
  empty = np.flatnonzero(weights.sum(1) == 0)
  if len(empty):
    raise EnsembleError(f'{len(empty)} model(s) see no example (all weights 0): models '
                        f'{_first(empty)}.')
  return weights


def _first(ids, limit: int = 10) -> str:
  ids = np.asarray(ids).tolist()
  return f'{ids[:limit]}{" ..." if len(ids) > limit else ""}'


def check_arrays(arrays) -> int:
  """The number of examples of the shared arrays {name: (N, ...)}."""
  if not arrays:
    raise EnsembleError('arrays is empty.')
  lengths = {k: len(v) for k, v in arrays.items()}
  if len(set(lengths.values())) != 1:
    raise EnsembleError(f'Arrays differ in length: {lengths}.')
  if MODEL_KEY in arrays:
    raise EnsembleError(f'arrays[{MODEL_KEY!r}]: the name is reserved for model m\'s own values '
                        f'in its batch (batch[{MODEL_KEY!r}]); rename the array.')
  return next(iter(lengths.values()))


def check_labels(arrays, num_classes: int | None, label_key: str = 'label') -> None:
  """arrays[label_key] holds class ids in [0, num_classes) (nothing to check without
  num_classes: the ensemble does not know what the loss reads)."""
  if num_classes is None:
    return
  if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or (
      num_classes < 1):
    raise EnsembleError(f'num_classes={num_classes!r}: expected a whole number >= 1.')
  if label_key not in arrays:
    raise EnsembleError(f'num_classes={num_classes} given but arrays has no {label_key!r} field '
                        f'(it has {sorted(arrays)}); pass label_key=<the class-id field>.')
  labels = np.asarray(arrays[label_key])
  if not np.issubdtype(labels.dtype, np.integer):
    raise EnsembleError(f'arrays[{label_key!r}] must be integer class ids, not {labels.dtype}.')
  bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
  if len(bad):
    raise EnsembleError(
        f'arrays[{label_key!r}] holds {len(bad)} label(s) outside [0, num_classes={num_classes}) '
        f'(example {int(bad[0])}: {int(labels[bad[0]])}; examples {_first(bad)}); fix the labels '
        'or num_classes.')


def check_model_arrays(model_arrays, arrays, num_models: int,
                       num_examples: int) -> dict[str, np.ndarray]:
  model_arrays = {k: np.asarray(v) for k, v in (model_arrays or {}).items()}
  for name, a in model_arrays.items():
    if name in arrays or name == MODEL_KEY:
      raise EnsembleError(f'model_arrays[{name!r}] would shadow '
                          f'{"arrays" if name in arrays else "the reserved batch entry"}'
                          f'[{name!r}]; rename one.')
    if a.shape[:2] != (num_models, num_examples):
      raise EnsembleError(f'model_arrays[{name!r}] has shape {a.shape}; expected (num_models, '
                          f'num_examples, ...) = ({num_models}, {num_examples}, ...).')
  return model_arrays


def check_model_scalars(model_scalars, num_models: int) -> dict[str, np.ndarray]:
  """{name: (M,) finite numbers}: model m's loss reads batch['model'][name] = value m."""
  out = {}
  for name, values in (model_scalars or {}).items():
    values = np.asarray(values)
    if name in RESERVED_SCALARS:
      raise EnsembleError(f'model_scalars[{name!r}]: the name is reserved (batch[{MODEL_KEY!r}] '
                          f'carries {RESERVED_SCALARS} itself); rename it.')
    if values.shape != (num_models,):
      raise EnsembleError(f'model_scalars[{name!r}] has shape {values.shape}; expected '
                          f'(num_models,) = ({num_models},): one value per model.')
    if values.dtype == bool or np.issubdtype(values.dtype, np.integer):
      values = values.astype(np.int32)
    elif np.issubdtype(values.dtype, np.floating):
      values = values.astype(np.float32)
    else:
      raise EnsembleError(f'model_scalars[{name!r}] must be numbers, not {values.dtype}.')
    if not np.all(np.isfinite(values)):
      raise EnsembleError(f'model_scalars[{name!r}] is not finite for models '
                          f'{_first(np.flatnonzero(~np.isfinite(values)))}.')
    out[name] = values
  return out


def check_init_params(init_params, num_models: int, abstract_params=None):
  """Host arrays, every leaf (M, ...) and finite; matching the model's parameters (one model's
  tree, shapes and dtypes: abstract_params) when the init_fn makes them."""
  if init_params is None:
    return None
  init_params = jax.tree.map(np.asarray, nn.meta.unbox(init_params))
  leaves = jax.tree_util.tree_flatten_with_path(init_params)[0]
  if not leaves:
    raise EnsembleError('init_params has no arrays.')
  for path, leaf in leaves:
    name = jax.tree_util.keystr(path)
    if leaf.ndim == 0 or leaf.shape[0] != num_models:
      raise EnsembleError(f'init_params{name} has shape {leaf.shape}; expected (num_models, ...) '
                          f'with num_models={num_models}: the parameters stacked, one per model.')
    if np.issubdtype(leaf.dtype, np.floating) and not np.all(np.isfinite(leaf)):
      bad = np.flatnonzero(~np.isfinite(leaf).reshape(num_models, -1).all(1))
      raise EnsembleError(f'init_params{name} is not finite for models {_first(bad)}.')
  if abstract_params is not None:
    one = {jax.tree_util.keystr(p): (tuple(a.shape[1:]), str(a.dtype)) for p, a in leaves}
    want = {jax.tree_util.keystr(p): (tuple(a.shape), str(np.dtype(a.dtype)))
            for p, a in jax.tree_util.tree_flatten_with_path(abstract_params)[0]}
    if one != want:
      differ = [f'  params{k}: init_params {one.get(k, "(absent)")}, init_fn '
                f'{want.get(k, "(absent)")}' for k in sorted(set(one) | set(want))
                if one.get(k) != want.get(k)]
      raise EnsembleError('init_params do not match the parameters init_fn makes (per model: '
                          '(shape, dtype)):\n' + '\n'.join(differ[:10]))
  return init_params


def nonfinite_inputs(arrays, model_arrays, weights) -> dict[str, np.ndarray]:
  """{input name: (M, N) bool}: the examples holding NaN/inf that model m sees (weights > 0).
  Not refused (a loss may ignore a field), but named if the loss turns NaN."""
  seen = weights > 0
  out = {}
  for name, a in arrays.items():
    a = np.asarray(a)
    if np.issubdtype(a.dtype, np.floating):
      bad = ~np.isfinite(a.reshape(len(a), -1)).all(1)
      if bad.any() and (seen & bad[None]).any():
        out[f'arrays[{name!r}]'] = seen & bad[None]
  for name, a in model_arrays.items():
    if np.issubdtype(a.dtype, np.floating):
      bad = ~np.isfinite(a.reshape(a.shape[0], a.shape[1], -1)).all(2)
      if (seen & bad).any():
        out[f'model_arrays[{name!r}]'] = seen & bad
  return out


def describe_nonfinite(nonfinite: dict[str, np.ndarray], models) -> str:
  """'' or the sentence naming the inputs with NaN/inf that `models` see."""
  parts = []
  for name, seen_bad in nonfinite.items():
    examples = np.flatnonzero(seen_bad[np.asarray(models)].any(0))
    if len(examples):
      parts.append(f'{name} holds NaN/inf in {len(examples)} example(s) these models see '
                   f'({_first(examples)})')
  if not parts:
    return ''
  return ('The inputs themselves are not finite: ' + '; '.join(parts) + '. Clean those examples '
          'or give them weight 0 (the learning rate is not the cause).')


# ---------------------------------------------------------------------------------------------
# Data order: model m's batch k is a pure function of (seed, m, k).
# ---------------------------------------------------------------------------------------------
def order_groups(shared, num_models: int) -> np.ndarray:
  """(M,) group ids from `shared_order`: False (every model its own order), True (one order for
  all), or a sequence of M group ids (models of one group share an order, groups' orders are
  independent: e.g. a seed's students paired, the seeds independent replicates)."""
  if isinstance(shared, (bool, np.bool_)):
    return np.zeros(num_models, np.int64) if shared else np.arange(num_models)
  groups = np.asarray(shared)
  if groups.shape != (num_models,) or not np.issubdtype(groups.dtype, np.integer):
    raise EnsembleError(f'shared_order must be True, False or {num_models} integer group ids '
                        f'(one per model); got {shared!r}.')
  return groups.astype(np.int64)


class EnsembleOrder:
  """Each model draws batches of `batch_size` in its own shuffled order of its own examples.

  shared: True: every model draws the same batches in the same order (model 0's order), for
  paired comparisons; M group ids: the models of a group draw their group's first model's order
  (paired within a group, independent between groups). Models that share an order must see the
  same examples (weights > 0 in the same places; the weights' values may differ).
  """

  def __init__(self, weights: np.ndarray, batch_size: int, seed: int, shared=False):
    self.batch_size = int(batch_size)
    self.seed = seed
    self.allowed = [np.flatnonzero(row > 0).astype(np.int32) for row in weights]
    groups = order_groups(shared, len(self.allowed))
    # Each model draws the order of the first model of its group (itself when unshared).
    self.leader = np.array([int(np.flatnonzero(groups == g)[0]) for g in groups])
    self.shared = bool((self.leader != np.arange(len(self.allowed))).any())
    self.groups = groups
    differ = [m for m, a in enumerate(self.allowed)
              if not np.array_equal(a, self.allowed[self.leader[m]])]
    if differ:
      m = differ[0]
      raise EnsembleError(
          f'shared_order needs the models that share an order to see the same examples; model '
          f'{m} sees {len(self.allowed[m])} where model {self.leader[m]} (its group\'s first) '
          f'sees {len(self.allowed[self.leader[m]])} (models {_first(differ)} differ). Use '
          'shared_order=False, or one support per group.')
    small = [m for m, a in enumerate(self.allowed) if len(a) < self.batch_size]
    if small:
      raise EnsembleError(
          f'{len(small)} model(s) see fewer examples than batch_size={self.batch_size} (model '
          f'{small[0]} sees {len(self.allowed[small[0]])}); lower the batch size.')
    self.steps_per_epoch = np.array([len(a) // self.batch_size for a in self.allowed])
    self._perms: dict[tuple[int, int], np.ndarray] = {}

  def _perm(self, m: int, epoch: int) -> np.ndarray:
    key = (m, epoch)
    if key not in self._perms:
      if len(self._perms) > 4 * len(self.allowed):  # keep about two epochs per model
        self._perms = {k: v for k, v in self._perms.items() if k[1] >= epoch - 1}
      rng = np.random.default_rng([self.seed, m, epoch])
      self._perms[key] = self.allowed[m][rng.permutation(len(self.allowed[m]))]
    return self._perms[key]

  def _batch(self, m: int, k: int) -> np.ndarray:
    epoch, i = divmod(k, int(self.steps_per_epoch[m]))
    return self._perm(m, epoch)[i * self.batch_size:(i + 1) * self.batch_size]

  def indices(self, k: int) -> np.ndarray:
    """(M, batch_size) example indices of step k (0-based) for every model."""
    out = np.empty((len(self.allowed), self.batch_size), np.int32)
    for leader in np.unique(self.leader):
      out[self.leader == leader] = self._batch(int(leader), k)
    return out

"""Many models of one architecture trained at once: memorisation's subsets, IWeS's pairs, seeds.

    result = ensemble.train_ensemble(config, workdir, init_fn=lambda rng: model.init(rng, x0),
                                     loss_fn=per_example_loss, arrays=train, weights=masks)
    logits = ensemble.predict(result.state, apply_fn, test['inputs'])     # (M, N, C)

Parameters and optimizer states are stacked on a leading model axis and one jitted step updates
the models it holds (`jax.vmap` over the per-model update). The M models go through it in chunks
of `ensemble.chunk_size` per device, one dispatch each (0: chosen for the backend and the model by
`choose_chunk`: on CPU a large model's GEMMs run faster unbatched and vmapped convolutions slower,
benchmarks/ensemble.py). Model m starts
from fold_in(key(seed), m), draws its batches in its own order from the examples it may see
(weights[m, i] > 0) and minimises

    sum_i w_mi l_i / sum_i w_mi          over its batch,

so a 0/1 mask trains it on its subset only and real-valued weights (importance weights) weight
its loss. The model axis maps onto the mesh axis `ensemble.model_axis` (each device trains
M / size of them); examples sit on every device and each step gathers its rows there. Checkpoints
hold the stacked state and the step (the data order is a pure function of (seed, m, step)), so a
killed run of 1,000 models resumes where it stopped.

`loss_fn(params, model_state, batch, rng) -> (per-example losses (B,), (metrics, model_state))`,
written for one model; the ensemble does the weighting, the vmap and the sharding.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable

from absl import logging
import flax
import flax.linen as nn
import jax
from jax.extend import core as jax_core
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from common import checkpoint as ckpt_lib
from common import config_lib
from common import mesh as mesh_lib
from common import metrics as metrics_lib
from common import train as train_lib
from common.data import pipeline

P = jax.sharding.PartitionSpec


class EnsembleError(ValueError):
  """Ensemble inputs that cannot train as asked; the message says what was expected."""


@flax.struct.dataclass
class EnsembleState:
  step: jax.Array               # ()
  params: Any                   # every leaf (M, ...)
  opt_state: Any
  model_state: Any
  nonfinite_step: jax.Array     # (M,): -1, or the 1-based step whose loss was NaN/inf


@dataclasses.dataclass
class EnsembleResult:
  state: EnsembleState
  history: list[dict[str, float]]
  mesh: jax.sharding.Mesh
  num_models: int
  total_steps: int
  resumed_from: int | None


# ---------------------------------------------------------------------------------------------
# Inputs: checked before any compute.
# ---------------------------------------------------------------------------------------------
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
                        f'{empty[:10].tolist()}{" ..." if len(empty) > 10 else ""}.')
  return weights


def _ensemble_config(config) -> tuple[int, str, int]:
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
  return num_models, axis, chunk


# ---------------------------------------------------------------------------------------------
# Data order: model m's batch k is a pure function of (seed, m, k).
# ---------------------------------------------------------------------------------------------
class EnsembleOrder:
  """Each model draws batches of `batch_size` in its own shuffled order of its own examples."""

  def __init__(self, weights: np.ndarray, batch_size: int, seed: int):
    self.batch_size = int(batch_size)
    self.seed = seed
    self.allowed = [np.flatnonzero(row > 0).astype(np.int32) for row in weights]
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

  def indices(self, k: int) -> np.ndarray:
    """(M, batch_size) example indices of step k (0-based) for every model."""
    out = np.empty((len(self.allowed), self.batch_size), np.int32)
    for m, spe in enumerate(self.steps_per_epoch):
      epoch, i = divmod(k, int(spe))
      out[m] = self._perm(m, epoch)[i * self.batch_size:(i + 1) * self.batch_size]
    return out


# ---------------------------------------------------------------------------------------------
# The update.
# ---------------------------------------------------------------------------------------------
def _init_one(init_fn, tx, rng):
  variables = dict(nn.meta.unbox(init_fn(rng)))
  params = variables.pop('params')
  return params, tx.init(params), variables


def _update_one(loss_fn, tx):
  """One model's weighted update: (params, opt_state, model_state, batch, weights, rng) ->
  (params, opt_state, model_state, metrics with 'loss')."""

  def update(params, opt_state, model_state, batch, weights, rng):
    def weighted(p):
      losses, (metrics, new_model_state) = loss_fn(p, model_state, batch, rng)
      loss = jnp.sum(losses * weights) / jnp.maximum(jnp.sum(weights), 1e-12)
      return loss, (metrics, new_model_state)

    (loss, (metrics, new_model_state)), grads = jax.value_and_grad(weighted, has_aux=True)(params)
    updates, new_opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), new_opt_state, new_model_state,
            dict(metrics, loss=loss))

  return update


def make_step(loss_fn, tx, seed: int):
  """(state, data, weights, indices (S, K, B), j, first[, model_data]) -> (state, metrics (K,)).

  One step of the K models a state holds (models first .. first + K - 1 of the ensemble: their
  RNG is fold_in(fold_in(key(seed), step), m)), at row j of the indices sent with this dispatch.
  A model whose loss turns NaN/inf is recorded in `nonfinite_step` (the loop stops on it at its
  next check; no checkpoint is written after it).
  """
  update = _update_one(loss_fn, tx)

  def step_fn(state: EnsembleState, data, weights, indices, j, first, model_data=None):
    idx = indices[j]                                            # (K, B)
    num = idx.shape[0]
    batch = jax.tree.map(lambda a: a[idx], data)                # (K, B, ...)
    for name, a in (model_data or {}).items():                  # (K, N, ...): model m's rows
      batch[name] = jax.vmap(lambda rows, i: rows[i])(a, idx)
    batch_weights = jnp.take_along_axis(weights, idx, axis=1)   # (K, B)
    base = jax.random.fold_in(jax.random.key(seed), state.step)
    rngs = jax.vmap(lambda m: jax.random.fold_in(base, m))(first + jnp.arange(num))
    args = (state.params, state.opt_state, state.model_state, batch, batch_weights, rngs)
    if num == 1:  # one model: its plain step (a vmap of one still batches convolutions)
      out = update(*jax.tree.map(lambda x: x[0], args))
      params, opt_state, model_state, metrics = jax.tree.map(lambda x: x[None], out)
    else:
      params, opt_state, model_state, metrics = jax.vmap(update)(*args)
    bad = (state.nonfinite_step < 0) & ~jnp.isfinite(metrics['loss'])
    nonfinite = jnp.where(bad, state.step + 1, state.nonfinite_step)
    return EnsembleState(step=state.step + 1, params=params, opt_state=opt_state,
                         model_state=model_state, nonfinite_step=nonfinite), metrics

  return step_fn


# ---------------------------------------------------------------------------------------------
# How many models per dispatch.
# ---------------------------------------------------------------------------------------------
# On CPU a vmapped step is a batched GEMM that XLA runs well below a plain GEMM's rate once one
# model's GEMMs are large, and vmapped convolutions become grouped convolutions that run at a
# fraction of the plain ones (benchmarks/ensemble.py). So on CPU a dispatch holds about
# CPU_FLOPS_PER_DISPATCH of work (at most MAX_CHUNK models per device), and models with
# convolutions go one at a time; on accelerators every model of a device goes in one dispatch.
CPU_FLOPS_PER_DISPATCH = 2.5e8
MAX_CHUNK = 64


def step_cost(loss_fn, tx, init_fn, example_batch) -> tuple[float, bool]:
  """(FLOPs of one model's step from its jaxpr's dot products and convolutions, has a conv).

  example_batch: one model's batch, arrays or jax.ShapeDtypeStruct (nothing is computed; the
  initialisation is traced too, and its few products count for little).
  """
  update = _update_one(loss_fn, tx)

  def one(rng, batch):
    params, opt_state, model_state = _init_one(init_fn, tx, rng)
    weights = jnp.ones(jax.tree.leaves(batch)[0].shape[:1], jnp.float32)
    return update(params, opt_state, model_state, batch, weights, rng)

  jaxpr = jax.make_jaxpr(one)(jax.random.key(0), example_batch)
  flops, conv = 0.0, False

  def walk(jaxpr):
    nonlocal flops, conv
    for eqn in jaxpr.eqns:
      name = eqn.primitive.name
      if name == 'dot_general':
        (contract, _), _ = eqn.params['dimension_numbers']
        lhs = eqn.invars[0].aval.shape
        flops += 2 * np.prod(eqn.outvars[0].aval.shape) * np.prod([lhs[d] for d in contract])
      elif name == 'conv_general_dilated':
        conv = True
        rhs = eqn.invars[1].aval.shape  # (out, in / groups, *window) in the canonical layout
        flops += 2 * np.prod(eqn.outvars[0].aval.shape) * np.prod(rhs) / max(rhs[0], 1)
      for sub in jax_core.jaxprs_in_params(eqn.params):
        walk(sub)

  walk(jaxpr.jaxpr)
  return float(flops), conv


def choose_chunk(per_device_models: int, flops: float, has_conv: bool,
                 backend: str | None = None) -> int:
  """Models per device in one dispatch (see CPU_FLOPS_PER_DISPATCH)."""
  backend = backend or jax.default_backend()
  if backend != 'cpu':
    return per_device_models
  if has_conv:
    return 1
  chunk = int(np.clip(2 ** np.floor(np.log2(max(CPU_FLOPS_PER_DISPATCH / max(flops, 1.0), 1.0))),
                      1, MAX_CHUNK))
  chunk = min(chunk, per_device_models)
  # A divisor of the device's models: equal chunks share one compiled step (a ragged last chunk
  # would compile another).
  while per_device_models % chunk:
    chunk -= 1
  return chunk


# ---------------------------------------------------------------------------------------------
# Training.
# ---------------------------------------------------------------------------------------------
def _concat(parts: list[EnsembleState]) -> EnsembleState:
  if len(parts) == 1:
    return parts[0]
  cat = lambda *xs: jnp.concatenate(xs) if xs[0].ndim else xs[0]
  return jax.tree.map(cat, *parts)


def train_ensemble(config: ml_collections.ConfigDict, workdir: str, *,
                   init_fn: Callable[[jax.Array], Any], loss_fn, arrays: dict[str, np.ndarray],
                   weights=None, model_arrays: dict[str, np.ndarray] | None = None,
                   mesh: jax.sharding.Mesh | None = None,
                   tx: optax.GradientTransformation | None = None,
                   identity: dict[str, Any] | None = None,
                   steps_per_dispatch: int = 64) -> EnsembleResult:
  """Trains config.ensemble.num_models models at once; resumes from workdir/checkpoints.

  Reads the loop's fields (seed, batch_size, total_steps | total_epochs, optimizer, cadence, mesh,
  resume_despite_changes) and `ensemble.{num_models, model_axis, chunk_size}`. `weights` (M, N):
  per-model example weights or 0/1 masks (None: every model sees every example). `model_arrays`
  {name: (M, N, ...)}: per-model values of each example (e.g. model m's own teacher's
  probabilities), which model m's batch carries under `name` beside `arrays`' fields. Epochs count
  the examples a model sees. The models go through the step in chunks of chunk_size per device
  (0: chosen by `choose_chunk`); the result does not depend on it, and a resumed run may change it.
  """
  # Checks that fail before any compute.
  config_lib.check_loop(config)
  num_models, model_axis, chunk = _ensemble_config(config)
  if not arrays:
    raise EnsembleError('arrays is empty.')
  lengths = {k: len(v) for k, v in arrays.items()}
  if len(set(lengths.values())) != 1:
    raise EnsembleError(f'Arrays differ in length: {lengths}.')
  num_examples = next(iter(lengths.values()))
  weights = check_weights(weights, num_models, num_examples)
  model_arrays = {k: np.asarray(v) for k, v in (model_arrays or {}).items()}
  for name, a in model_arrays.items():
    if name in arrays:
      raise EnsembleError(f'model_arrays[{name!r}] would shadow arrays[{name!r}]; rename one.')
    if a.shape[:2] != (num_models, num_examples):
      raise EnsembleError(f'model_arrays[{name!r}] has shape {a.shape}; expected (num_models, '
                          f'num_examples, ...) = ({num_models}, {num_examples}, ...).')
  order = EnsembleOrder(weights, config.batch_size, config.seed)
  mean_seen = float(np.mean([len(a) for a in order.allowed]))
  total_steps = config_lib.num_steps(config, 'total', int(mean_seen), config.batch_size)
  mesh = mesh or mesh_lib.mesh_from_config(config)
  if model_axis not in mesh.shape:
    raise config_lib.ConfigError(f'ensemble.model_axis={model_axis!r} is not an axis of the mesh '
                                 f'{dict(mesh.shape)}.')
  ways = mesh.shape[model_axis]
  if num_models % ways:
    raise config_lib.ConfigError(
        f'ensemble.num_models={num_models} does not divide over the {ways}-way {model_axis!r} '
        f'mesh axis; use a multiple of {ways} (or pad with extra models and ignore them).')
  data_axes = tuple(a for a in mesh.shape if a != model_axis and mesh.shape[a] > 1)
  if config.batch_size % int(np.prod([mesh.shape[a] for a in data_axes] or [1])):
    raise config_lib.ConfigError(f'batch_size={config.batch_size} does not divide over the mesh '
                                 f'axes {data_axes}.')

  tx = tx or train_lib.make_optimizer(config.optimizer, total_steps)
  per_device = num_models // ways
  if not chunk:
    example = {k: jax.ShapeDtypeStruct((config.batch_size,) + a.shape[1:], a.dtype)
               for k, a in arrays.items()}
    example.update({k: jax.ShapeDtypeStruct((config.batch_size,) + a.shape[2:], a.dtype)
                    for k, a in model_arrays.items()})
    flops, has_conv = step_cost(loss_fn, tx, init_fn, example)
    chunk = choose_chunk(per_device, flops, has_conv)
    logging.info('Ensemble chunk: %d model(s) per device per dispatch (%.3g FLOPs per model '
                 'step%s, backend %s).', chunk, flops, ', convolutions' if has_conv else '',
                 jax.default_backend())
  chunk = min(chunk, per_device)
  bounds = [(lo, min(lo + chunk * ways, num_models)) for lo in range(0, num_models, chunk * ways)]

  rng = jax.random.key(config.seed)
  model_rngs = jax.vmap(lambda m: jax.random.fold_in(rng, m))(jnp.arange(num_models))
  init_all = jax.vmap(lambda r: _init_one(init_fn, tx, r))
  abstract_parts = jax.eval_shape(init_all, model_rngs)
  stacked = jax.sharding.NamedSharding(mesh, P(model_axis))
  replicated = mesh_lib.replicated(mesh)
  part_shardings = jax.tree.map(lambda _: stacked, abstract_parts)
  shardings = EnsembleState(step=replicated, params=part_shardings[0],
                            opt_state=part_shardings[1], model_state=part_shardings[2],
                            nonfinite_step=stacked)
  abstract = EnsembleState(step=jax.ShapeDtypeStruct((), jnp.int32), params=abstract_parts[0],
                           opt_state=abstract_parts[1], model_state=abstract_parts[2],
                           nonfinite_step=jax.ShapeDtypeStruct((num_models,), jnp.int32))
  # What determines the result, as common.train records it; the weights are part of the data.
  data_fingerprint = {'arrays': {k: pipeline.digest(v) for k, v in arrays.items()},
                      'weights': pipeline.digest(weights)}
  if model_arrays:
    data_fingerprint['model_arrays'] = {k: pipeline.digest(v) for k, v in model_arrays.items()}
  meta = {'fingerprint': ckpt_lib.fingerprint(abstract), 'total_steps': total_steps,
          'run': train_lib.run_identity(config, data_fingerprint, identity)}
  checkpointer, restored = train_lib.open_checkpoints(config, workdir, abstract, shardings, meta)
  join = jax.jit(lambda *parts: _concat(list(parts)), out_shardings=shardings)
  resumed_from, saved_history = None, None
  with jax.set_mesh(mesh):
    if restored is not None:
      resumed_from, whole, _, saved_meta = restored
      saved_history = saved_meta.get('history')
      logging.info('Resumed the ensemble from step %d.', resumed_from)
      take = lambda lo, hi: jax.tree.map(lambda x: x[lo:hi] if x.ndim else x, whole)
      parts = [jax.jit(functools.partial(take, lo, hi), out_shardings=shardings)()
               for lo, hi in bounds]
      del whole
    else:
      @functools.partial(jax.jit, out_shardings=shardings)
      def init(rngs):
        params, opt_state, model_state = init_all(rngs)
        return EnsembleState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state,
                             model_state=model_state,
                             nonfinite_step=jnp.full((len(rngs),), -1, jnp.int32))
      parts = []
      for lo, hi in bounds:
        rngs = jax.device_put(model_rngs[lo:hi], stacked)
        parts.append(init(rngs))
  per_model_params = sum(int(np.prod(x.shape[1:])) for x in jax.tree.leaves(abstract.params))
  logging.info('Ensemble: %d models x %s parameters, %d steps of %d examples each; model axis %r '
               '(%d-way), %d dispatch(es) of up to %d model(s) per device.', num_models,
               f'{per_model_params:,}', total_steps, config.batch_size, model_axis, ways,
               len(bounds), chunk)

  # Data on the devices; indices of `steps_per_dispatch` steps sent at a time.
  data = pipeline.replicate(arrays, mesh)
  to_models = lambda a: jax.make_array_from_callback(a.shape, stacked, lambda idx: a[idx])
  weights_dev = [to_models(weights[lo:hi]) for lo, hi in bounds]
  model_data = [{k: to_models(v[lo:hi]) for k, v in model_arrays.items()} for lo, hi in bounds]
  batch_axes = data_axes if len(data_axes) != 1 else data_axes[0]
  index_sharding = jax.sharding.NamedSharding(mesh, P(None, model_axis, batch_axes or None))
  jitted = jax.jit(make_step(loss_fn, tx, config.seed + 1), donate_argnums=(0,))

  def load_indices(first):
    last = min(first + steps_per_dispatch, total_steps)
    rows = np.stack([order.indices(k) for k in range(first, last)])
    if len(rows) < steps_per_dispatch:
      rows = np.concatenate([rows, np.repeat(rows[-1:], steps_per_dispatch - len(rows), 0)])
    return [jax.make_array_from_callback((len(rows), hi - lo) + rows.shape[2:], index_sharding,
                                         lambda idx, lo=lo, hi=hi: rows[:, lo:hi][idx])
            for lo, hi in bounds]

  writer = metrics_lib.MetricWriter(workdir, resume_step=resumed_from or 0,
                                    saved_records=saved_history)
  history = list(writer.records)
  log_every = max(1, int(config.get('log_every_steps', 100)))
  start = int(jax.device_get(parts[0].step))
  sync_every_step = mesh.size > 1 and jax.default_backend() == 'cpu'  # as in common.train
  buffer, indices, first = [], None, None
  t_last, step_last = time.perf_counter(), start

  def check_finite():
    bad = np.concatenate([np.asarray(jax.device_get(p.nonfinite_step)) for p in parts])
    if np.any(bad >= 0):
      models = np.flatnonzero(bad >= 0)
      last = checkpointer.latest_step()
      raise train_lib.NonFiniteLossError(
          f'Loss became NaN or inf for {len(models)} model(s) ({models[:10].tolist()}) first at '
          f'step {int(bad[bad >= 0].min())}; the last good checkpoint is step {last} in '
          f'{checkpointer.directory}. Lower the learning rate or set optimizer.grad_clip_norm.')

  try:
    with jax.set_mesh(mesh):
      for step in range(start + 1, total_steps + 1):
        k = step - 1
        if first is None or not first <= k < first + steps_per_dispatch:
          first, indices = k, load_indices(k)
        row = []
        for c, (lo, _) in enumerate(bounds):
          parts[c], metrics = jitted(parts[c], data, weights_dev[c], indices[c], k - first, lo,
                                     model_data[c])
          row.append(metrics)
        buffer.append(row)
        if sync_every_step:
          jax.block_until_ready(row)
        if step % log_every == 0 or step == total_steps:
          check_finite()
          steps_metrics = jax.device_get(buffer)  # [step][chunk] -> {name: (K,)}
          buffer = []
          per_model = {name: np.stack([np.concatenate([c[name] for c in s]) for s in steps_metrics])
                       for name in steps_metrics[0][0]}           # (steps, M)
          record = {name: float(np.mean(v)) for name, v in per_model.items()}
          record['loss_max_model'] = float(np.max(np.mean(per_model['loss'], 0)))
          now = time.perf_counter()
          steps_per_s = (step - step_last) / max(now - t_last, 1e-9)
          record['model_examples_per_s'] = steps_per_s * num_models * config.batch_size
          t_last, step_last = now, step
          writer.write(step, record)
          history.append({'step': step, **record})
          logging.info('step %d/%d mean loss=%.4f %.3g model-examples/s ETA %s', step,
                       total_steps, record['loss'], record['model_examples_per_s'],
                       train_lib._hms((total_steps - step) / max(steps_per_s, 1e-9)))  # pylint: disable=protected-access
        if checkpointer.should_save(step) and step != total_steps:
          check_finite()
          checkpointer.save(step, join(*parts), data_state={'position': step},
                            meta=dict(meta, history=history))
      check_finite()
      state = join(*parts)
      if start < total_steps:
        checkpointer.save(total_steps, state, data_state={'position': total_steps},
                          meta=dict(meta, history=history), force=True)
  finally:
    checkpointer.close()
    writer.close()
  return EnsembleResult(state=state, history=history, mesh=mesh, num_models=num_models,
                        total_steps=total_steps, resumed_from=resumed_from)


# ---------------------------------------------------------------------------------------------
# Evaluation of all M models in one call.
# ---------------------------------------------------------------------------------------------
def predict(state: EnsembleState, apply_fn: Callable[..., jax.Array], inputs: np.ndarray, *,
            batch_size: int = 1024) -> np.ndarray:
  """(M, N, ...) outputs of every model on every input; apply_fn(variables, inputs) -> outputs.

  Runs on the state's mesh (the model axis stays sharded); inputs go through in batches.
  """
  inputs = np.asarray(inputs)
  if len(inputs) == 0:
    raise EnsembleError('predict got no inputs.')
  variables = {'params': state.params, **state.model_state}
  fn = jax.jit(jax.vmap(apply_fn, in_axes=(0, None)))
  outs = []
  for i in range(0, len(inputs), batch_size):
    chunk = inputs[i:i + batch_size]
    pad = batch_size - len(chunk) if len(inputs) > batch_size else 0
    if pad:  # one compiled shape for every batch
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, 0)])
    out = np.asarray(jax.device_get(fn(variables, chunk)))
    outs.append(out[:, :out.shape[1] - pad] if pad else out)
  return np.concatenate(outs, axis=1)


def correctness(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """(M, N) bool: argmax of each model's logits == label (0/1 correctness, per model and example)."""
  logits, labels = np.asarray(logits), np.asarray(labels)
  if logits.ndim != 3 or labels.shape != logits.shape[1:2]:
    raise EnsembleError(f'Expected logits (M, N, C) and labels (N,); got {logits.shape} and '
                        f'{labels.shape}.')
  if not np.issubdtype(labels.dtype, np.integer):
    raise EnsembleError(f'labels must be class ids (integers), not {labels.dtype}.')
  return np.argmax(logits, -1) == labels[None, :]


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """(M, N) softmax cross-entropy of every model on every example."""
  correctness(logits, labels)  # the same shape checks
  logits = np.asarray(logits, np.float64)
  top = logits.max(-1, keepdims=True)
  log_z = np.log(np.sum(np.exp(logits - top), -1)) + top[..., 0]
  return log_z - np.take_along_axis(logits, np.asarray(labels)[None, :, None], -1)[..., 0]

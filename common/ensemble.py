"""Many models of one architecture trained at once: memorisation's subsets, IWeS's pairs, seeds.

    result = ensemble.train_ensemble(config, workdir, init_fn=lambda rng: model.init(rng, x0),
                                     loss_fn=per_example_loss, arrays=train, weights=masks)
    logits = ensemble.predict(result.state, apply_fn, test['inputs'])     # (M, N, C)

`loss_fn(params, model_state, batch, rng) -> (per-example losses (B,), (metrics, model_state))`
is written for one model; the ensemble does the weighting, the batching and the sharding. Model m
minimises sum_i w_mi l_i / sum_i w_mi over its batch, so a 0/1 mask trains it on its subset only
and real-valued weights (importance weights) weight its loss. What makes model m itself:

- its start: fold_in(key(seed), m) for init_fn, or `init_params` (every leaf (M, ...): model m
  starts from row m, e.g. hold-out fine-tuning from trained models; init_fn may then be None, or
  give the other collections);
- its data: the examples with weights[m, i] > 0, drawn in its own order, or with
  `shared_order=True` the same batches in the same order for every model (paired comparisons),
  or with `shared_order=` M group ids the same order within a group and independent orders
  between groups (a seed's arms paired, the seeds independent replicates);
  `model_arrays` {name: (M, N, ...)} put model m's own row of each example in its batch (its own
  teacher's probabilities);
- its loss inputs: batch['model'] = {'index': m, 'step': the 0-based step, and model_scalars
  {name: (M,)} at m} (a per-model alpha or switch step), so no caller has to recover m.

Parameters and optimizer states are stacked on a leading model axis, which maps onto the mesh axis
`ensemble.model_axis` (each device trains M / size of them; examples sit on every device). The
models go through one jitted step in dispatches of `ensemble.chunk_size` per device (0: chosen by
common.ensemble_plan). On CPU the step maps over a dispatch's models, so a model's result is the
same bit for bit whatever the chunk (tests/common/test_ensemble_chunks.py) and a resumed run may
change it; on accelerators it batches them (vmap), the chunk can change float rounding, and a
resume under another chunk is refused (`ensemble.models_per_dispatch` in the run's identity).
Checkpoints hold the stacked state and the step (the data order is a pure function of
(seed, m, step)), so a killed run of 1,000 models resumes where it stopped.

The phases of train_ensemble: check the inputs (common.ensemble_inputs: before any compute),
plan the chunks (common.ensemble_plan), build or restore the state, run the steps
(common.ensemble_step), and evaluate with predict / correctness / cross_entropy.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import scipy.special

from common import checkpoint as ckpt_lib
from common import config_lib
from common import ensemble_inputs
from common import ensemble_plan
from common import ensemble_step
from common import mesh as mesh_lib
from common import metrics as metrics_lib
from common import train as train_lib
from common.data import pipeline
# The public names of the parts, as common.ensemble has always offered them.
from common.ensemble_inputs import check_weights, EnsembleError, EnsembleOrder, MODEL_KEY  # pylint: disable=g-multiple-import,unused-import
from common.ensemble_plan import choose_chunk, CPU_FLOPS_PER_DISPATCH, MAX_CHUNK, step_cost  # pylint: disable=g-multiple-import,unused-import
from common.ensemble_step import EnsembleState, make_step  # pylint: disable=g-multiple-import,unused-import

P = jax.sharding.PartitionSpec
_init_one = ensemble_step.init_one  # benchmarks/ensemble.py builds states with it


@dataclasses.dataclass
class EnsembleResult:
  state: EnsembleState
  history: list[dict[str, float]]
  mesh: jax.sharding.Mesh
  num_models: int
  total_steps: int
  resumed_from: int | None


def train_ensemble(config: ml_collections.ConfigDict, workdir: str, *,
                   init_fn: Callable[[jax.Array], Any] | None, loss_fn,
                   arrays: dict[str, np.ndarray], weights=None,
                   model_arrays: dict[str, np.ndarray] | None = None,
                   model_scalars: dict[str, Any] | None = None, init_params=None,
                   shared_order=False, num_classes: int | None = None,
                   label_key: str = 'label', mesh: jax.sharding.Mesh | None = None,
                   tx: optax.GradientTransformation | None = None,
                   identity: dict[str, Any] | None = None,
                   steps_per_dispatch: int = 64) -> EnsembleResult:
  """Trains config.ensemble.num_models models at once; resumes from workdir/checkpoints.

  Reads the loop's fields (seed, batch_size, total_steps | total_epochs, optimizer, cadence, mesh,
  resume_despite_changes) and `ensemble.{num_models, model_axis, chunk_size}`. `weights` (M, N):
  per-model example weights or 0/1 masks (None: every model sees every example); epochs count the
  examples a model sees. model_arrays, model_scalars, init_params, shared_order: see the module
  docstring. num_classes: arrays[label_key] must hold class ids in [0, num_classes) (checked
  before compute). identity: what else determines the result (e.g. the model's config).
  """
  # 1. The inputs, checked before any compute; 2. the chunks of each step; 3. the state; 4. the
  # steps. (5., evaluation, is predict / correctness / cross_entropy.)
  inputs = _check_inputs(config, init_fn, arrays, weights, model_arrays, model_scalars,
                         init_params, shared_order, num_classes, label_key)
  mesh = mesh or mesh_lib.mesh_from_config(config)
  ways, data_axes = ensemble_plan.check_mesh(mesh, inputs.num_models, inputs.model_axis,
                                             config.batch_size)
  tx = tx or train_lib.make_optimizer(config.optimizer, inputs.total_steps)
  cost = lambda: ensemble_plan.step_cost(loss_fn, tx, init_fn, _example_batch(config, inputs),
                                         _first_model(inputs.init_params))
  plan = ensemble_plan.plan_chunks(inputs.num_models, inputs.chunk_size, ways, data_axes, cost)
  start = _build_or_restore(config, workdir, inputs, plan, mesh, init_fn, tx, identity)
  try:
    state, history = _run(config, workdir, inputs, plan, mesh, start,
                          jax.jit(make_step(loss_fn, tx, config.seed + 1, batched=plan.batched,
                                            model_axis=inputs.model_axis), donate_argnums=(0,)),
                          steps_per_dispatch)
  finally:
    start.checkpointer.close()
  return EnsembleResult(state=state, history=history, mesh=mesh, num_models=inputs.num_models,
                        total_steps=inputs.total_steps, resumed_from=start.resumed_from)


# ---------------------------------------------------------------------------------------------
# Phase 1: the inputs, checked before any compute.
# ---------------------------------------------------------------------------------------------
def _check_inputs(config, init_fn, arrays, weights, model_arrays, model_scalars, init_params,
                  shared_order, num_classes, label_key) -> ensemble_inputs.Inputs:
  config_lib.check_loop(config)
  num_models, model_axis, chunk = ensemble_inputs.ensemble_config(config)
  num_examples = ensemble_inputs.check_arrays(arrays)
  ensemble_inputs.check_labels(arrays, num_classes, label_key)
  weights = check_weights(weights, num_models, num_examples)
  model_arrays = ensemble_inputs.check_model_arrays(model_arrays, arrays, num_models,
                                                    num_examples)
  model_scalars = ensemble_inputs.check_model_scalars(model_scalars, num_models)
  if init_fn is None and init_params is None:
    raise EnsembleError('init_fn is None and no init_params: give one of them.')
  made = None
  if init_params is not None and init_fn is not None:  # traced, not run
    made = jax.eval_shape(lambda r: dict(nn.meta.unbox(init_fn(r))).get('params'),
                          jax.random.key(0))
  init_params = ensemble_inputs.check_init_params(init_params, num_models, made)
  order = EnsembleOrder(weights, config.batch_size, config.seed, shared=shared_order)
  mean_seen = float(np.mean([len(a) for a in order.allowed]))
  total_steps = config_lib.num_steps(config, 'total', int(mean_seen), config.batch_size)
  nonfinite = ensemble_inputs.nonfinite_inputs(arrays, model_arrays, weights)
  for name, seen_bad in nonfinite.items():
    logging.warning('%s holds NaN/inf in %d example(s) that %d model(s) see: their losses will '
                    'likely be NaN.', name, int(seen_bad.any(0).sum()), int(seen_bad.any(1).sum()))
  return ensemble_inputs.Inputs(
      num_models=num_models, model_axis=model_axis, chunk_size=chunk, num_examples=num_examples,
      arrays=dict(arrays), weights=weights, model_arrays=model_arrays,
      model_scalars=model_scalars, init_params=init_params, order=order,
      total_steps=total_steps, nonfinite=nonfinite)


def _first_model(init_params):
  return None if init_params is None else jax.tree.map(lambda a: a[0], init_params)


def _example_batch(config, inputs: ensemble_inputs.Inputs):
  """One model's batch as ShapeDtypeStructs (for the step's cost)."""
  b = config.batch_size
  example = {k: jax.ShapeDtypeStruct((b,) + np.shape(a)[1:], np.asarray(a).dtype)
             for k, a in inputs.arrays.items()}
  example.update({k: jax.ShapeDtypeStruct((b,) + a.shape[2:], a.dtype)
                  for k, a in inputs.model_arrays.items()})
  scalars = {'index': jnp.int32, 'step': jnp.int32,
             **{k: v.dtype for k, v in inputs.model_scalars.items()}}
  example[MODEL_KEY] = {k: jax.ShapeDtypeStruct((), d) for k, d in scalars.items()}
  return example


# ---------------------------------------------------------------------------------------------
# Phase 3: the state, built sharded (or restored), in one part per dispatch.
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class _Start:
  parts: list[EnsembleState]
  shardings: EnsembleState
  checkpointer: ckpt_lib.Checkpointer
  meta: dict[str, Any]
  resumed_from: int | None
  saved_history: list[dict[str, Any]] | None


def _run_identity(config, inputs: ensemble_inputs.Inputs, plan, identity) -> dict[str, Any]:
  """What determines the result, as common.train records it; weights and per-model values are
  part of the data."""
  digest = pipeline.digest
  data = {'arrays': {k: digest(np.asarray(v)) for k, v in inputs.arrays.items()},
          'weights': digest(inputs.weights)}
  if inputs.model_arrays:
    data['model_arrays'] = {k: digest(v) for k, v in inputs.model_arrays.items()}
  if inputs.model_scalars:
    data['model_scalars'] = {k: digest(v) for k, v in inputs.model_scalars.items()}
  if inputs.init_params is not None:
    data['init_params'] = {jax.tree_util.keystr(p): digest(v) for p, v in
                           jax.tree_util.tree_flatten_with_path(inputs.init_params)[0]}
  if inputs.order.shared:
    groups = inputs.order.groups
    data['shared_order'] = True if (groups == groups[0]).all() else groups.tolist()
  run = train_lib.run_identity(config, data, identity)
  if plan.batched:  # a batched step's rounding depends on the chunk (common.ensemble_step)
    run['ensemble.models_per_dispatch'] = plan.chunk
  return run


def _build_or_restore(config, workdir, inputs: ensemble_inputs.Inputs, plan, mesh, init_fn, tx,
                      identity) -> _Start:
  num_models = inputs.num_models
  # Keys and initialisations one model at a time (lax.map, not vmap): with the 'rbg' PRNGs
  # batched random bits differ from unbatched ones, so a vmap over a dispatch's models made model
  # m's initial weights depend on how many models shared its dispatch. Model m's key is
  # fold_in(key(seed), m), drawn on the devices from the models' indices (a key array made on
  # one host cannot be placed on another process's devices).
  keys_of = lambda model_ids: jax.lax.map(
      lambda m: jax.random.fold_in(jax.random.key(config.seed), m), model_ids)
  init_all = lambda model_ids, starts: jax.lax.map(
      lambda a: ensemble_step.init_one(init_fn, tx, *a), (keys_of(model_ids), starts))
  model_ids = np.arange(num_models, dtype=np.int32)
  abstract_parts = jax.eval_shape(init_all, model_ids, inputs.init_params)
  stacked = jax.sharding.NamedSharding(mesh, P(inputs.model_axis))
  part_shardings = jax.tree.map(lambda _: stacked, abstract_parts)
  shardings = EnsembleState(step=mesh_lib.replicated(mesh), params=part_shardings[0],
                            opt_state=part_shardings[1], model_state=part_shardings[2],
                            nonfinite_step=stacked)
  abstract = EnsembleState(step=jax.ShapeDtypeStruct((), jnp.int32), params=abstract_parts[0],
                           opt_state=abstract_parts[1], model_state=abstract_parts[2],
                           nonfinite_step=jax.ShapeDtypeStruct((num_models,), jnp.int32))
  meta = {'fingerprint': ckpt_lib.fingerprint(abstract), 'total_steps': inputs.total_steps,
          'run': _run_identity(config, inputs, plan, identity)}
  checkpointer, restored = train_lib.open_checkpoints(config, workdir, abstract, shardings, meta)
  resumed_from, saved_history = None, None
  with jax.set_mesh(mesh):
    if restored is not None:
      resumed_from, whole, _, saved_meta = restored
      saved_history = saved_meta.get('history')
      logging.info('Resumed the ensemble from step %d.', resumed_from)
      # `whole` is an argument, not a closure: jit cannot close over arrays spanning processes.
      take = lambda tree, lo, hi: jax.tree.map(lambda x: x[lo:hi] if x.ndim else x, tree)
      parts = [jax.jit(functools.partial(take, lo=lo, hi=hi), out_shardings=shardings)(whole)
               for lo, hi in plan.bounds]
      del whole
    else:
      @functools.partial(jax.jit, out_shardings=shardings)
      def init(ids, start_params):
        params, opt_state, model_state = init_all(ids, start_params)
        return EnsembleState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state,
                             model_state=model_state,
                             nonfinite_step=jnp.full((len(ids),), -1, jnp.int32))
      to_models = lambda a: jax.make_array_from_callback(a.shape, stacked, lambda i: a[i])
      parts = [init(to_models(model_ids[lo:hi]),
                    jax.tree.map(lambda a, lo=lo, hi=hi: to_models(a[lo:hi]), inputs.init_params))
               for lo, hi in plan.bounds]
  per_model = sum(int(np.prod(x.shape[1:])) for x in jax.tree.leaves(abstract.params))
  logging.info('Ensemble: %d models x %s parameters, %d steps of %d examples each; model axis %r '
               '(%d-way), %d dispatch(es) of up to %d model(s) per device (%s).', num_models,
               f'{per_model:,}', inputs.total_steps, config.batch_size, inputs.model_axis,
               plan.ways, len(plan.bounds), plan.chunk, 'vmap' if plan.batched else 'map')
  return _Start(parts=parts, shardings=shardings, checkpointer=checkpointer, meta=meta,
                resumed_from=resumed_from, saved_history=saved_history)


# ---------------------------------------------------------------------------------------------
# Phase 4: the steps.
# ---------------------------------------------------------------------------------------------
class _Feeds:
  """What each dispatch reads besides its state: the examples (on every device), its models'
  weights, rows and scalars (on their devices), and the batch indices of the coming steps."""

  def __init__(self, inputs: ensemble_inputs.Inputs, plan, mesh, steps_per_dispatch: int):
    stacked = jax.sharding.NamedSharding(mesh, P(inputs.model_axis))
    to_models = lambda a: jax.make_array_from_callback(a.shape, stacked, lambda idx: a[idx])
    self.data = pipeline.replicate(inputs.arrays, mesh)
    self.weights = [to_models(inputs.weights[lo:hi]) for lo, hi in plan.bounds]
    self.model_data = [{k: to_models(v[lo:hi]) for k, v in inputs.model_arrays.items()}
                       for lo, hi in plan.bounds]
    self.model_scalars = [{k: to_models(v[lo:hi]) for k, v in inputs.model_scalars.items()}
                          for lo, hi in plan.bounds]
    axes = plan.data_axes if len(plan.data_axes) != 1 else plan.data_axes[0]
    self._index_sharding = jax.sharding.NamedSharding(mesh, P(None, inputs.model_axis,
                                                              axes or None))
    self._order, self._bounds = inputs.order, plan.bounds
    self._total, self._every = inputs.total_steps, steps_per_dispatch
    self._first, self._indices = None, None

  def indices(self, k: int):
    """(row of step k, the index arrays of each dispatch holding it): loaded `every` steps at
    a time (the last rows repeated past the end: one shape)."""
    if self._first is None or not self._first <= k < self._first + self._every:
      last = min(k + self._every, self._total)
      rows = np.stack([self._order.indices(s) for s in range(k, last)])
      if len(rows) < self._every:
        rows = np.concatenate([rows, np.repeat(rows[-1:], self._every - len(rows), 0)])
      self._first = k
      self._indices = [
          jax.make_array_from_callback((len(rows), hi - lo) + rows.shape[2:],
                                       self._index_sharding,
                                       lambda idx, lo=lo, hi=hi: rows[:, lo:hi][idx])
          for lo, hi in self._bounds]
    return k - self._first, self._indices


def _check_finite(parts, checkpointer, inputs: ensemble_inputs.Inputs) -> None:
  bad = np.concatenate([mesh_lib.fetch(p.nonfinite_step) for p in parts])
  if np.all(bad < 0):
    return
  models = np.flatnonzero(bad >= 0)
  advice = ensemble_inputs.describe_nonfinite(inputs.nonfinite, models) or (
      'Lower the learning rate or set optimizer.grad_clip_norm.')
  raise train_lib.NonFiniteLossError(
      f'Loss became NaN or inf for {len(models)} model(s) ({models[:10].tolist()}) first at '
      f'step {int(bad[bad >= 0].min())}; the last good checkpoint is step '
      f'{checkpointer.latest_step()} in {checkpointer.directory}. {advice}')


def _record(buffer, num_models: int, batch_size: int, steps: int, seconds: float):
  """The logged record of the steps in `buffer` ([step][dispatch] -> {name: (K,)})."""
  steps_metrics = mesh_lib.fetch(buffer)
  per_model = {name: np.stack([np.concatenate([c[name] for c in s]) for s in steps_metrics])
               for name in steps_metrics[0][0]}           # (steps, M)
  record = {name: float(np.mean(v)) for name, v in per_model.items()}
  record['loss_max_model'] = float(np.max(np.mean(per_model['loss'], 0)))
  steps_per_s = steps / max(seconds, 1e-9)
  record['model_examples_per_s'] = steps_per_s * num_models * batch_size
  return record, steps_per_s


def _run(config, workdir, inputs: ensemble_inputs.Inputs, plan, mesh, start: _Start, jitted,
         steps_per_dispatch: int):
  """Every step from the start's to total_steps: (final state, history)."""
  parts, checkpointer, total = start.parts, start.checkpointer, inputs.total_steps
  feeds = _Feeds(inputs, plan, mesh, steps_per_dispatch)
  join = jax.jit(lambda *ps: _concat(list(ps)), out_shardings=start.shardings)
  writer = metrics_lib.MetricWriter(workdir, resume_step=start.resumed_from or 0,
                                    saved_records=start.saved_history)
  history = list(writer.records)
  log_every = max(1, int(config.get('log_every_steps', 100)))
  first = int(mesh_lib.fetch(parts[0].step))
  sync_every_step = mesh.size > 1 and jax.default_backend() == 'cpu'  # as in common.train
  buffer, t_last, step_last = [], time.perf_counter(), first
  save = lambda step, state, **kw: checkpointer.save(
      step, state, data_state={'position': step}, meta=dict(start.meta, history=history), **kw)
  try:
    with jax.set_mesh(mesh):
      for step in range(first + 1, total + 1):
        j, indices = feeds.indices(step - 1)
        row = []
        for c, (lo, _) in enumerate(plan.bounds):
          parts[c], metrics = jitted(parts[c], feeds.data, feeds.weights[c], indices[c], j, lo,
                                     feeds.model_data[c], feeds.model_scalars[c])
          row.append(metrics)
        buffer.append(row)
        if sync_every_step:
          jax.block_until_ready(row)
        if step % log_every == 0 or step == total:
          _check_finite(parts, checkpointer, inputs)
          now = time.perf_counter()
          record, steps_per_s = _record(buffer, inputs.num_models, config.batch_size,
                                        step - step_last, now - t_last)
          buffer, t_last, step_last = [], now, step
          writer.write(step, record)
          history.append({'step': step, **record})
          logging.info('step %d/%d mean loss=%.4f %.3g model-examples/s ETA %s', step, total,
                       record['loss'], record['model_examples_per_s'],
                       train_lib._hms((total - step) / max(steps_per_s, 1e-9)))  # pylint: disable=protected-access
        if checkpointer.should_save(step) and step != total:
          _check_finite(parts, checkpointer, inputs)
          save(step, join(*parts))
      _check_finite(parts, checkpointer, inputs)
      state = join(*parts)
      if first < total:
        save(total, state, force=True)
  finally:
    writer.close()
  return state, history


def _concat(parts: list[EnsembleState]) -> EnsembleState:
  if len(parts) == 1:
    return parts[0]
  cat = lambda *xs: jnp.concatenate(xs) if xs[0].ndim else xs[0]
  return jax.tree.map(cat, *parts)


# ---------------------------------------------------------------------------------------------
# Phase 5: evaluation of all M models in one call.
# ---------------------------------------------------------------------------------------------
def predict(state: EnsembleState, apply_fn: Callable[..., jax.Array], inputs: np.ndarray, *,
            batch_size: int = 1024) -> np.ndarray:
  """(M, N, ...) outputs of every model on every input; apply_fn(variables, inputs) -> outputs.

  Runs on the state's mesh (the model axis stays sharded); inputs go through in batches.
  """
  inputs = np.asarray(inputs)
  if len(inputs) == 0:
    raise EnsembleError('predict got no inputs.')
  sharding = getattr(jax.tree.leaves(state.params)[0], 'sharding', None)
  axis = (sharding.spec[0] if isinstance(sharding, jax.sharding.NamedSharding) and sharding.spec
          else None)
  program = (predict_program(apply_fn, sharding.mesh, axis) if isinstance(axis, str)
             else predict_program(apply_fn))
  return predict_batches(program, {'params': state.params, **state.model_state}, inputs,
                         batch_size)


def predict_program(apply_fn, mesh: jax.sharding.Mesh | None = None,
                    model_axis: str | None = None):
  """jit(variables (K, ...), inputs (B, ...)) -> (K, B, ...): the K models vmapped. When their
  stack is split over `model_axis` of `mesh` (more than one way), under shard_map over that
  axis, so that each device runs only its own K / ways models (a plain jit of the vmap lets XLA
  gather every model onto every device: K times the memory and the work; as
  ensemble_step._each_model does for the step)."""
  fn = jax.vmap(apply_fn, in_axes=(0, None))
  if mesh is not None and model_axis is not None and mesh.shape[model_axis] > 1:
    fn = jax.shard_map(fn, mesh=mesh, in_specs=(P(model_axis), P()), out_specs=P(model_axis),
                       axis_names={model_axis})
  return jax.jit(fn)


def predict_batches(program, variables, inputs: np.ndarray, batch_size: int) -> np.ndarray:
  """(K, N, ...) on the host: `program(variables, batch)` over `inputs` in batches of
  batch_size, the last one padded with its last row (one compiled shape for every batch),
  each read through common.mesh.fetch (a model axis over several processes)."""
  outs = []
  for i in range(0, len(inputs), batch_size):
    chunk = inputs[i:i + batch_size]
    pad = batch_size - len(chunk) if len(inputs) > batch_size else 0
    if pad:
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, 0)])
    out = mesh_lib.fetch(program(variables, chunk))
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
  log_probs = scipy.special.log_softmax(np.asarray(logits, np.float64), axis=-1)
  return -np.take_along_axis(log_probs, np.asarray(labels)[None, :, None], -1)[..., 0]

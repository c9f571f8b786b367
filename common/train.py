"""The one training loop. Papers pass a model's init and a loss; the loop does the rest.

Read top to bottom: the state and optimizer, sharding and the state born sharded, checkpoint
loading, the update step, the loop (input, logging, evaluation, checkpoints).

    result = train.train(config, workdir, init_fn=init_fn, loss_fn=loss_fn,
                         train_iter=pipeline.BatchIterator(arrays, config.batch_size),
                         evaluators=[...])

`loss_fn(params, model_state, batch, rng) -> (loss, (metrics, new_model_state))`, where
`model_state` holds mutable collections (e.g. {'batch_stats': ...}; {} when there are none).
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any, Callable, Protocol, Sequence

from absl import logging
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from common import checkpoint as ckpt_lib
from common import config_lib
from common import mesh as mesh_lib
from common import metrics as metrics_lib
from common.data import pipeline

LossFn = Callable[..., tuple[jax.Array, tuple[dict[str, jax.Array], Any]]]


class Evaluator(Protocol):
  """A plug-in run every `eval_every_steps`: returns {metric name: scalar}."""

  def run(self, state: 'TrainState') -> dict[str, float]:
    ...


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any
  model_state: Any
  # -1 while every loss has been finite; else the (1-based) step whose loss was NaN or inf. From
  # that step on, updates are not applied, so the parameters are the last good ones.
  nonfinite_step: jax.Array


@dataclasses.dataclass
class TrainResult:
  state: TrainState
  history: list[dict[str, float]]  # train and eval records, as written to metrics.jsonl
  mesh: jax.sharding.Mesh
  state_shardings: Any
  total_steps: int
  resumed_from: int | None


class NonFiniteLossError(FloatingPointError):
  """The loss became NaN or inf; the message names the step and the last good checkpoint."""


# ---------------------------------------------------------------------------------------------
# Optimizer.
# ---------------------------------------------------------------------------------------------
def learning_rate_schedule(config: ml_collections.ConfigDict, total_steps: int):
  """config.{learning_rate, schedule ('constant'|'cosine'|'linear'), warmup_steps}."""
  lr = float(config.learning_rate)
  warmup = int(config.get('warmup_steps', 0))
  kind = config.get('schedule', 'constant')
  decay_steps = max(1, total_steps - warmup)
  if kind == 'constant':
    main = optax.constant_schedule(lr)
  elif kind == 'cosine':
    main = optax.cosine_decay_schedule(lr, decay_steps)
  elif kind == 'linear':
    main = optax.linear_schedule(lr, 0.0, decay_steps)
  else:
    raise config_lib.ConfigError(f'Unknown schedule {kind!r}; use constant, cosine or linear.')
  if warmup:
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])
  return main


OPTIMIZERS = ('sgd', 'momentum', 'adam', 'adamw')


def make_optimizer(config: ml_collections.ConfigDict, total_steps: int):
  """config.{name, learning_rate, schedule, warmup_steps, weight_decay, momentum, grad_clip_norm}."""
  name = config.get('name', 'adam')
  lr = learning_rate_schedule(config, total_steps)
  wd = float(config.get('weight_decay', 0.0) or 0.0)
  if name == 'sgd':
    tx = optax.sgd(lr)
  elif name == 'momentum':
    tx = optax.sgd(lr, momentum=float(config.get('momentum', 0.9)), nesterov=True)
  elif name == 'adam':
    tx = optax.adam(lr)
  elif name == 'adamw':
    tx = optax.adamw(lr, weight_decay=wd)
    wd = 0.0
  else:
    raise config_lib.ConfigError(
        f'Unknown optimizer {name!r}{config_lib.closest(name, OPTIMIZERS)}; available: '
        f'{OPTIMIZERS}.')
  chain = []
  if config.get('grad_clip_norm'):
    chain.append(optax.clip_by_global_norm(float(config.grad_clip_norm)))
  if wd:  # coupled L2 for sgd/momentum/adam
    chain.append(optax.add_decayed_weights(wd))
  return optax.chain(*chain, tx)


# ---------------------------------------------------------------------------------------------
# Sharding and the state born sharded.
# ---------------------------------------------------------------------------------------------
def _init_state(init_fn, tx, rng) -> TrainState:
  variables = dict(nn.meta.unbox(init_fn(rng)))
  params = variables.pop('params')
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    model_state=variables, nonfinite_step=jnp.full((), -1, jnp.int32))


def state_shardings(init_fn, tx, rng, mesh, rules):
  """(abstract state, its shardings): parameters by their logical axes, optimizer state alike."""
  boxed = jax.eval_shape(init_fn, rng)
  var_shardings = dict(mesh_lib.tree_shardings(boxed, mesh, rules))
  param_shardings = var_shardings.pop('params')
  abstract = jax.eval_shape(lambda r: _init_state(init_fn, tx, r), rng)
  replicated = mesh_lib.replicated(mesh)
  opt_shardings = optax.tree_map_params(
      tx, lambda _, s: s, abstract.opt_state, param_shardings,
      transform_non_params=lambda _: replicated)
  shardings = TrainState(step=replicated, params=param_shardings, opt_state=opt_shardings,
                         model_state=var_shardings, nonfinite_step=replicated)
  return abstract, shardings


# ---------------------------------------------------------------------------------------------
# The update step.
# ---------------------------------------------------------------------------------------------
def make_train_step(loss_fn: LossFn, tx, seed: int):
  """One update; its RNG is fold_in(key(seed), step), so a resumed run draws the same numbers."""

  def step_fn(state: TrainState, batch):
    rng = jax.random.fold_in(jax.random.key(seed), state.step)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (loss, (metrics, new_model_state)), grads = grad_fn(state.params, state.model_state, batch,
                                                        rng)
    updates, new_opt_state = tx.update(grads, state.opt_state, state.params)
    new_params = optax.apply_updates(state.params, updates)
    ok = jnp.isfinite(loss) & (state.nonfinite_step < 0)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)
    new_state = TrainState(
        step=state.step + 1,
        params=keep(new_params, state.params),
        opt_state=keep(new_opt_state, state.opt_state),
        model_state=keep(new_model_state, state.model_state),
        nonfinite_step=jnp.where((state.nonfinite_step < 0) & ~jnp.isfinite(loss),
                                 state.step + 1, state.nonfinite_step))
    metrics = dict(metrics, loss=loss, grad_norm=optax.global_norm(grads))
    return new_state, metrics

  return step_fn


# ---------------------------------------------------------------------------------------------
# The loop.
# ---------------------------------------------------------------------------------------------
def _check_finite(state: TrainState, checkpointer: ckpt_lib.Checkpointer | None):
  bad = int(jax.device_get(state.nonfinite_step))
  if bad >= 0:
    last = checkpointer.latest_step() if checkpointer else None
    where = (f'the last good checkpoint is step {last} in {checkpointer.directory}'
             if last is not None else 'no checkpoint was written before it')
    raise NonFiniteLossError(f'Loss became NaN or inf at step {bad}; training stopped and {where}.'
                             ' Lower the learning rate or enable optimizer.grad_clip_norm.')


# Loop fields (or dotted sub-fields) that do not change the trained state: a resumed run may
# change them freely. Every other field of the loop config (and the caller's `identity`, and the
# training data) determines the result, so a checkpoint records them and a resume under other
# values is refused.
RESUMABLE_FIELDS = (
    'log_every_steps', 'eval_every_steps', 'checkpoint_every_steps', 'keep_checkpoints',
    'eval_batch_size', 'eval_splits', 'mesh', 'num_devices', 'sharding', 'sharding_rules',
    'device_data_max_mb', 'data_dir', 'expected_accuracy', 'resume_despite_changes',
    'ensemble.chunk_size',
    # The length of the run is checked on its own: longer continues it, shorter is refused.
    'total_steps', 'total_epochs')


def run_identity(config: ml_collections.ConfigDict, data: dict[str, Any],
                 identity: dict[str, Any] | None = None) -> dict[str, Any]:
  """What determines a run's result, as flat JSON values: config fields, the caller's extra
  fields (e.g. a model defined outside the loop config), and the training data's fingerprint."""
  fields = config_lib.flatten(config.to_dict())
  parts = lambda k: {'.'.join(k.split('.')[:i]) for i in range(1, k.count('.') + 2)}
  out = {k: v for k, v in fields.items() if not parts(k) & set(RESUMABLE_FIELDS)}
  out.update(config_lib.flatten(identity or {}, 'identity.'))
  out.update(config_lib.flatten(data, 'data.'))
  return json.loads(json.dumps(out, default=str))  # tuples -> lists, as they come back from JSON


def open_checkpoints(config: ml_collections.ConfigDict, workdir: str, abstract, shardings,
                     meta: dict[str, Any]):
  """(checkpointer, restored): restored is (step, state, data_state, saved_meta) of the newest
  readable checkpoint that this run may resume (see Checkpointer.restore_latest), or None."""
  checkpointer = ckpt_lib.Checkpointer(
      f'{workdir}/checkpoints', save_every_steps=config.get('checkpoint_every_steps', 1000),
      keep=config.get('keep_checkpoints', 2))
  restored = checkpointer.restore_latest(
      ckpt_lib.abstract_like(abstract, shardings), meta=meta,
      allow_changes=bool(config.get('resume_despite_changes', False)))
  return checkpointer, restored


def _check_and_plan(config: ml_collections.ConfigDict, train_iter: pipeline.BatchOrder,
                    mesh: jax.sharding.Mesh | None):
  """(mesh, rules, total_steps) after the checks that must fail before any compute."""
  config_lib.check_loop(config)
  mesh = mesh or mesh_lib.mesh_from_config(config)
  rules = mesh_lib.rules_from_config(config)
  mesh_lib.check_rules(rules, mesh)
  data_ways = mesh_lib.batch_axis_size(mesh, rules)
  if train_iter.global_batch_size % data_ways:
    raise config_lib.ConfigError(
        f'batch_size={train_iter.global_batch_size} does not divide over the {data_ways}-way data '
        f'axis of the mesh {dict(mesh.shape)}.')
  total_steps = config_lib.num_steps(config, 'total', train_iter.num_examples,
                                     train_iter.global_batch_size)
  return mesh, rules, total_steps


@dataclasses.dataclass
class _Start:
  """Where a run starts: a fresh or restored state, its shardings and the open checkpoints."""
  state: TrainState
  shardings: Any
  checkpointer: ckpt_lib.Checkpointer
  meta: dict[str, Any]  # what every checkpoint of this run records
  resumed_from: int | None
  saved_history: list[dict[str, float]] | None


def _build_or_restore(config: ml_collections.ConfigDict, workdir: str, init_fn, tx, mesh, rules,
                      total_steps: int, train_iter: pipeline.BatchOrder,
                      identity: dict[str, Any] | None) -> _Start:
  """The state born sharded, or restored (with the data position) from the newest checkpoint
  that this run may resume."""
  rng_init = jax.random.key(config.seed)
  abstract, shardings = state_shardings(init_fn, tx, rng_init, mesh, rules)
  meta = {'fingerprint': ckpt_lib.fingerprint(abstract), 'total_steps': total_steps,
          'run': run_identity(config, train_iter.fingerprint(), identity)}
  checkpointer, restored = open_checkpoints(config, workdir, abstract, shardings, meta)
  resumed_from, saved_history = None, None
  if restored is not None:
    resumed_from, state, data_state, saved_meta = restored
    saved_history = saved_meta.get('history')
    train_iter.set_state(data_state)
    logging.info('Resumed from step %d (data position %d).', resumed_from, train_iter.position)
  else:
    with jax.set_mesh(mesh):
      state = jax.jit(lambda r: _init_state(init_fn, tx, r), out_shardings=shardings)(rng_init)
  num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract.params))
  logging.info('Parameters: %s; total steps %d; state shardings:\n%s', f'{num_params:,}',
               total_steps, _describe_shardings(shardings.params))
  return _Start(state=state, shardings=shardings, checkpointer=checkpointer, meta=meta,
                resumed_from=resumed_from, saved_history=saved_history)


def _compile_step(config: ml_collections.ConfigDict, loss_fn: LossFn, tx, shardings, mesh, rules,
                  train_iter: pipeline.BatchOrder, total_steps: int):
  """(batches, jitted step): the input source and the update step that reads its items."""
  batch_sharding = mesh_lib.batch_sharding(mesh, rules)
  step_fn = make_train_step(loss_fn, tx, config.seed + 1)
  # One input shape whatever the source: `batches` yields items and `batches.materialise(item)`,
  # traced inside the step, turns one into the global batch. A training set that fits lives on
  # the devices and an item is the row indices of a step (gathered there: no per-step host work);
  # larger ones stream from the host and an item is the batch itself.
  batches = pipeline.make_batches(train_iter, mesh, batch_sharding, limit=total_steps,
                                  device_max_bytes=config.get('device_data_max_mb', 256) * 2**20)
  jitted = jax.jit(lambda state, item: step_fn(state, batches.materialise(item)),
                   donate_argnums=(0,), out_shardings=(shardings, mesh_lib.replicated(mesh)))
  logging.info('Training data: %d examples, %s.', train_iter.num_examples, batches.description)
  return batches, jitted


def _mean_metrics(buffer: list[dict[str, jax.Array]]) -> dict[str, float]:
  stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *buffer)  # one transfer per metric
  return {k: float(np.mean(v)) for k, v in jax.device_get(stacked).items()}


class _Records:
  """metrics.jsonl and the history: the train metrics averaged over the steps since the last
  record (with examples/s and the ETA in the log line), and the evaluations."""

  def __init__(self, writer: metrics_lib.MetricWriter, total_steps: int, global_batch_size: int,
               start: int):
    self.writer, self.history = writer, list(writer.records)
    self.total_steps, self.global_batch_size = total_steps, global_batch_size
    self.buffer: list[dict[str, jax.Array]] = []
    self.t_last, self.step_last = time.perf_counter(), start

  def add(self, metrics: dict[str, jax.Array]) -> None:
    self.buffer.append(metrics)  # device arrays: read once per record, not per step

  def _write(self, step: int, record: dict[str, float]) -> None:
    self.writer.write(step, record)
    self.history.append({'step': step, **record})

  def train(self, step: int) -> None:
    record = _mean_metrics(self.buffer)
    self.buffer = []
    now = time.perf_counter()
    steps_per_s = (step - self.step_last) / max(now - self.t_last, 1e-9)
    record['examples_per_s'] = steps_per_s * self.global_batch_size
    self.t_last, self.step_last = now, step
    self._write(step, record)
    eta = (self.total_steps - step) / max(steps_per_s, 1e-9)
    logging.info('step %d/%d loss=%.4f %.0f ex/s ETA %s', step, self.total_steps, record['loss'],
                 record['examples_per_s'], _hms(eta))

  def evaluate(self, evaluators: Sequence[Evaluator], step: int, state: TrainState) -> None:
    record = {}
    for evaluator in evaluators:
      record.update(evaluator.run(state))
    if record:
      self._write(step, record)
      logging.info('step %d eval: %s', step,
                   ', '.join(f'{k}={v:.4f}' for k, v in sorted(record.items())))


def train(config: ml_collections.ConfigDict, workdir: str, *, init_fn: Callable[[jax.Array], Any],
          loss_fn: LossFn, train_iter: pipeline.BatchOrder,
          evaluators: Sequence[Evaluator] = (), tx: optax.GradientTransformation | None = None,
          mesh: jax.sharding.Mesh | None = None,
          identity: dict[str, Any] | None = None) -> TrainResult:
  """Trains from scratch or resumes from the newest readable checkpoint in `workdir/checkpoints`.

  Config fields read: seed, batch_size, total_steps | total_epochs, optimizer.*, log_every_steps,
  eval_every_steps, checkpoint_every_steps, keep_checkpoints, mesh, num_devices, sharding,
  device_data_max_mb (training sets up to this size live on the devices; default 256) and
  resume_despite_changes.

  A resume is refused when the checkpoint was made under other values of the fields that
  determine the result (every loop field but RESUMABLE_FIELDS, the `identity` the caller passes
  for what the loop config does not hold, such as a model defined elsewhere, and the training
  data), or with a smaller total_steps; `resume_despite_changes=True` continues deliberately.
  A larger total_steps continues a run.

  The phases: check and plan (mesh, rules, length), build or restore the state, compile the
  step over its input, then the steps with their records, evaluations and checkpoints.
  """
  mesh, rules, total_steps = _check_and_plan(config, train_iter, mesh)
  tx = tx or make_optimizer(config.optimizer, total_steps)
  start = _build_or_restore(config, workdir, init_fn, tx, mesh, rules, total_steps, train_iter,
                            identity)
  state, checkpointer = start.state, start.checkpointer
  batches, jitted = _compile_step(config, loss_fn, tx, start.shardings, mesh, rules, train_iter,
                                  total_steps)
  writer = metrics_lib.MetricWriter(workdir, resume_step=start.resumed_from or 0,
                                    saved_records=start.saved_history)
  log_every = max(1, int(config.get('log_every_steps', 100)))
  eval_every = int(config.get('eval_every_steps', 0) or 0)
  first = int(jax.device_get(state.step))
  records = _Records(writer, total_steps, train_iter.global_batch_size, first)

  def save(step, current, force=False):
    checkpointer.save(step, current, data_state=train_iter.get_state(),
                      meta=dict(start.meta, history=records.history), force=force)

  # On the CPU backend with several devices (fake devices in one process, or several processes
  # over gloo), steps left in flight can interleave their collectives: the all-reduce rendezvous
  # then waits for a device thread that is busy with the next step and aborts after 40 s (seen on
  # 2 cores). One step at a time there; accelerators keep their steps in flight.
  sync_every_step = mesh.size > 1 and jax.default_backend() == 'cpu'
  try:
    # The rules also lay out activations that models constrain by logical axes.
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      for step in range(first + 1, total_steps + 1):
        state, metrics = jitted(state, next(batches))
        records.add(metrics)
        if sync_every_step:
          jax.block_until_ready(metrics)
        if step % log_every == 0 or step == total_steps:
          _check_finite(state, checkpointer)
          records.train(step)
        if eval_every and step % eval_every == 0 and step != total_steps:
          records.evaluate(evaluators, step, state)
        if checkpointer.should_save(step) and step != total_steps:
          _check_finite(state, checkpointer)
          save(step, state)
      _check_finite(state, checkpointer)
      if first < total_steps:  # else a finished run was resumed: its results are in history
        records.evaluate(evaluators, total_steps, state)
        save(total_steps, state, force=True)
  finally:
    batches.close()
    checkpointer.close()
    writer.close()
  return TrainResult(state=state, history=records.history, mesh=mesh,
                     state_shardings=start.shardings, total_steps=total_steps,
                     resumed_from=start.resumed_from)


def _describe_shardings(tree) -> str:
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return '\n'.join(f'  {jax.tree_util.keystr(p)}: {s.spec}' for p, s in leaves[:40])


def _hms(seconds: float) -> str:
  seconds = int(seconds)
  return f'{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}'

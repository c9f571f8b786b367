"""common.ensemble's update: one jitted step of the models a dispatch holds, and their state.

On CPU the models of a dispatch go through the update one after another inside the step
(`jax.lax.map`, under `jax.shard_map` over the model axis when it spans devices): every model
runs the same compiled single-model program whatever the chunk, so its result does not depend
on how many models share a dispatch (bit for bit, tests/common/test_ensemble_chunks.py). On
accelerators they are batched (`jax.vmap`), which is what fills them; a batched GEMM may sum in
another order for another batch, so there the chunk is part of a run's identity.
"""

from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from common.ensemble_inputs import MODEL_KEY

P = jax.sharding.PartitionSpec


@flax.struct.dataclass
class EnsembleState:
  step: jax.Array               # ()
  params: Any                   # every leaf (M, ...)
  opt_state: Any
  model_state: Any
  nonfinite_step: jax.Array     # (M,): -1, or the 1-based step whose loss was NaN/inf


def models_batched(backend: str | None = None) -> bool:
  """Whether a dispatch batches its models (vmap: accelerators) or maps over them (CPU)."""
  return (backend or jax.default_backend()) != 'cpu'


def init_one(init_fn, tx, rng, start_params=None):
  """(params, opt_state, other collections) of one model: init_fn's variables, with its
  parameters replaced by start_params when given (init_fn may then be None)."""
  variables = dict(nn.meta.unbox(init_fn(rng))) if init_fn is not None else {}
  if start_params is not None:
    variables['params'] = start_params
  params = variables.pop('params')
  return params, tx.init(params), variables


def update_one(loss_fn, tx):
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


def _each_model(update, model_axis: str | None, batched: bool = False):
  """The update over the stacked models of a dispatch: batched (vmap, accelerators) or one model
  at a time (lax.map, CPU; see the module docstring). When the model axis spans devices, each
  device runs only its own models (shard_map over that axis): a plain vmap of a sharded stack
  leaves XLA free to gather every model's parameters onto every device, which it does for
  convolutions (8 ResNet-18s over 8 devices: 114 all-gathers, 1.96 GiB of temporaries per device
  against 0.30 under shard_map)."""
  if batched:
    per_device = lambda args: jax.vmap(update)(*args)
  else:
    per_device = lambda args: jax.lax.map(lambda a: update(*a), args)
  mesh = jax.sharding.get_abstract_mesh()
  if model_axis is None or mesh.empty or mesh.shape.get(model_axis, 1) == 1:
    return per_device
  return jax.shard_map(per_device, in_specs=P(model_axis), out_specs=P(model_axis),
                       axis_names={model_axis})


def make_step(loss_fn, tx, seed: int, *, batched: bool | None = None,
              model_axis: str | None = 'model'):
  """(state, data, weights, indices (S, K, B), j, first[, model_data, model_scalars]) ->
  (state, metrics (K,)).

  One step of the K models a state holds (models first .. first + K - 1 of the ensemble: their
  RNG is fold_in(fold_in(key(seed), step), m)), at row j of the indices sent with this dispatch.
  Model m's batch carries batch['model'] = {'index': m, 'step': the 0-based step, and its
  model_scalars}. A model whose loss turns NaN/inf is recorded in `nonfinite_step` (the loop
  stops on it at its next check; no checkpoint is written after it). batched: vmap the models
  (None: on accelerators, models_batched) or map over them.
  """
  update = update_one(loss_fn, tx)
  batched = models_batched() if batched is None else batched

  def step_fn(state: EnsembleState, data, weights, indices, j, first, model_data=None,
              model_scalars=None):
    idx = indices[j]                                            # (K, B)
    num = idx.shape[0]
    batch = jax.tree.map(lambda a: a[idx], data)                # (K, B, ...)
    for name, a in (model_data or {}).items():                  # (K, N, ...): model m's rows
      batch[name] = jax.vmap(lambda rows, i: rows[i])(a, idx)
    models = first + jnp.arange(num, dtype=jnp.int32)           # (K,)
    batch[MODEL_KEY] = {'index': models, 'step': jnp.full((num,), state.step, jnp.int32),
                        **(model_scalars or {})}
    batch_weights = jnp.take_along_axis(weights, idx, axis=1)   # (K, B)
    base = jax.random.fold_in(jax.random.key(seed), state.step)
    # One key per model, drawn one model at a time (lax.map, not vmap): with the 'rbg' PRNGs a
    # batched fold_in gives other keys than an unbatched one, so a vmap here made model m's key,
    # and its training, depend on how many models shared its dispatch.
    rngs = jax.lax.map(lambda m: jax.random.fold_in(base, m), models)
    args = (state.params, state.opt_state, state.model_state, batch, batch_weights, rngs)
    params, opt_state, model_state, metrics = _each_model(update, model_axis, batched)(args)
    bad = (state.nonfinite_step < 0) & ~jnp.isfinite(metrics['loss'])
    nonfinite = jnp.where(bad, state.step + 1, state.nonfinite_step)
    return EnsembleState(step=state.step + 1, params=params, opt_state=opt_state,
                         model_state=model_state, nonfinite_step=nonfinite), metrics

  return step_fn

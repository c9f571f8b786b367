"""common.ensemble's chunk plan: how many models one dispatch of the step holds, per device.

On accelerators every model of a device goes in one dispatch. On CPU a dispatch holds about
CPU_FLOPS_PER_DISPATCH of work (at most MAX_CHUNK models per device), and models with
convolutions go one at a time (benchmarks/ensemble.py measured these on the batched step; on CPU
the step now maps over its models, so the chunk changes the speed, not the result: see
common.ensemble_step).
"""

from __future__ import annotations

import dataclasses

from absl import logging
import jax
from jax.extend import core as jax_core
import jax.numpy as jnp
import numpy as np

from common import config_lib
from common import ensemble_step
from common.ensemble_inputs import MODEL_KEY

CPU_FLOPS_PER_DISPATCH = 2.5e8
MAX_CHUNK = 64


@dataclasses.dataclass(frozen=True)
class ChunkPlan:
  ways: int                         # devices on the model axis
  chunk: int                        # models per device per dispatch
  bounds: list[tuple[int, int]]     # [lo, hi) models of each dispatch
  data_axes: tuple[str, ...]        # mesh axes the batch splits over
  batched: bool                     # vmap (accelerators) or map (CPU) over a dispatch's models


def step_cost(loss_fn, tx, init_fn, example_batch, start_params=None) -> tuple[float, bool]:
  """(FLOPs of one model's step from its jaxpr's dot products and convolutions, has a conv).

  example_batch: one model's batch, arrays or jax.ShapeDtypeStruct (nothing is computed; the
  initialisation is traced too, and its few products count for little). start_params: one
  model's starting parameters when init_fn does not make them.
  """
  update = ensemble_step.update_one(loss_fn, tx)

  def one(rng, batch, start):
    params, opt_state, model_state = ensemble_step.init_one(init_fn, tx, rng, start)
    size = next(x.shape[0] for k, x in batch.items() if k != MODEL_KEY)
    weights = jnp.ones((size,), jnp.float32)
    return update(params, opt_state, model_state, batch, weights, rng)

  jaxpr = jax.make_jaxpr(one)(jax.random.key(0), example_batch, start_params)
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


def check_mesh(mesh, num_models: int, model_axis: str, batch_size: int):
  """(ways, data_axes): the model axis' size and the axes a batch splits over, checked."""
  if model_axis not in mesh.shape:
    raise config_lib.ConfigError(f'ensemble.model_axis={model_axis!r} is not an axis of the mesh '
                                 f'{dict(mesh.shape)}.')
  ways = mesh.shape[model_axis]
  if num_models % ways:
    raise config_lib.ConfigError(
        f'ensemble.num_models={num_models} does not divide over the {ways}-way {model_axis!r} '
        f'mesh axis; use a multiple of {ways} (or pad with extra models and ignore them).')
  data_axes = tuple(a for a in mesh.shape if a != model_axis and mesh.shape[a] > 1)
  if batch_size % int(np.prod([mesh.shape[a] for a in data_axes] or [1])):
    raise config_lib.ConfigError(f'batch_size={batch_size} does not divide over the mesh '
                                 f'axes {data_axes}.')
  return ways, data_axes


def plan_chunks(num_models: int, chunk_size: int, ways: int, data_axes, cost) -> ChunkPlan:
  """The dispatches of a step: chunk_size models per device (0: choose_chunk, from cost() ->
  (FLOPs of one model's step, has a convolution), traced only then)."""
  per_device = num_models // ways
  chunk = chunk_size
  if not chunk:
    flops, has_conv = cost()
    chunk = choose_chunk(per_device, flops, has_conv)
    logging.info('Ensemble chunk: %d model(s) per device per dispatch (%.3g FLOPs per model '
                 'step%s, backend %s).', chunk, flops, ', convolutions' if has_conv else '',
                 jax.default_backend())
  chunk = min(chunk, per_device)
  bounds = [(lo, min(lo + chunk * ways, num_models)) for lo in range(0, num_models, chunk * ways)]
  return ChunkPlan(ways=ways, chunk=chunk, bounds=bounds, data_axes=tuple(data_axes),
                   batched=ensemble_step.models_batched())

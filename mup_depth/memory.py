"""Per-device memory of the sweep's one-step measurement at a variant's largest (n, L).

    config.rehearsal.memory = {'step': 'mup_depth.memory:sweep_step'}

The experiment trains no model with the common loop: its heavy program is the sweep's
measurement of one (n, L) cell (sweep._measure: a chunk of seeds vmapped, each drawing a
mean-field MLP, taking the hidden layers' gradient step, and with the exact estimator bisecting
eta* over 30 applied steps). This compiles that program ahead of time, as run_sweep calls it, at
the largest width and depth of config.sweep with the seed chunk run_sweep picks there, for one
device: the sweep runs on one device (it is not split over a mesh; a pod's other devices idle).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from common import memory
from mup_depth import one_step
from mup_depth import parameterisation as mlp
from mup_depth import sweep


def sweep_step(config, spec, devices=None) -> memory.Estimate:
  """common.memory.Estimate of sweep._measure at config.sweep's largest (n, L). The parameters
  are drawn inside the program: they are counted from their shapes (x the seeds of a chunk) and
  taken out of XLA's temporaries."""
  del spec
  cfg = config.sweep
  width, depth = max(cfg.widths), max(cfg.depths)
  chunk = sweep.seed_chunk(width, depth, cfg.num_seeds)
  device = (devices or jax.devices())[0]
  on_device = jax.sharding.SingleDeviceSharding(device)
  abstract = lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=on_device)
  keys = abstract(jax.eval_shape(lambda: jax.random.split(jax.random.key(0), chunk)))
  rates = {k: abstract(jax.ShapeDtypeStruct((), jnp.float32)) for k in one_step.HIDDEN_ONLY}
  scalar = abstract(jax.ShapeDtypeStruct((), jnp.float32))
  measure = jax.jit(functools.partial(
      sweep._measure,  # pylint: disable=protected-access
      input_dim=cfg.input_dim, width=width, depth=depth, batch_size=cfg.batch_size,
      exact=bool(cfg.exact), layer=-1))
  args, outs, alias, temps = memory.compiled_memory(measure, keys, rates, scalar, scalar)
  shapes = jax.eval_shape(lambda key: mlp.init(key, cfg.input_dim, width, depth, 1),
                          jax.random.key(0))
  params = chunk * memory.tree_bytes(shapes)
  return memory.Estimate(
      params=params, optimizer=0, other_arguments=args, outputs=max(0, outs - alias),
      temporaries=max(0, temps - params), devices=1,
      note=(f'mup_depth one-step measurement (sweep._measure, '
            f'{"exact" if cfg.exact else "linearised"} estimator) at n={width}, L={depth}, '
            f'{chunk} seed(s) per chunk of {cfg.num_seeds}, batch {cfg.batch_size}; one device'))

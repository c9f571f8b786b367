"""Per-device memory of the pause study's pretraining step (common.memory), for the rehearsal.

    config.rehearsal.memory = {'step': 'pause.memory:pretrain_step'}
    pause.memory.finetune_step(config)   # the fine-tuning ensemble's, beside it

The step is the one `pause.experiment.pretrain` hands to common.train: the experiment's own model
(`make_model`) and loss (`pretrain_model`: common.lm's next-token loss over {'tokens',
'weights'}), at the config's real pretrain.batch_size and pretrain_length, over pretrain.mesh
with pretrain.sharding, compiled ahead of time (nothing allocated). Both pretrained models (with
and without pauses) compile this same program. `finetune_step` estimates the fine-tuning
ensemble's update (common.ensemble: every device holds whole models, not FSDP shards).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from common import ensemble_step as step_lib
from common import lm
from common import memory
from common import mesh as mesh_lib
from common import train as train_lib
from pause import experiment


def pretrain_step(config: ml_collections.ConfigDict, spec=None, devices=None) -> memory.Estimate:
  """The pretraining update at the real global batch (pretrain.batch_size rows of
  pretrain_length + 1 tokens) and mesh."""
  del spec
  init_fn, loss_fn = experiment.pretrain_model(config)
  batch, length = config.pretrain.batch_size, config.pretrain_length
  fields = {'tokens': ((batch, length + 1), jnp.int32), 'weights': ((batch, length), jnp.float32)}
  m = config.model
  note = (f'pause pretraining step ({m.num_layers} layers, d {m.d_model}, '
          f'{m.get("attention", "naive")} attention; common.train, common.lm loss)')
  return memory.train_step(config.pretrain, init_fn, loss_fn, fields, devices, note=note)


def finetune_step(config: ml_collections.ConfigDict, spec=None, devices=None) -> memory.Estimate:
  """The fine-tuning ensemble's update (common.ensemble, as `pause.experiment.finetune` runs it):
  finetune.ensemble.num_models seeds of the same model, finetune.batch_size rows of
  finetune_length + 1 tokens each, spread over the mesh's 'model' axis and replicated over the
  others (an ensemble's models are not FSDP-sharded), the fine-tuning rows on every device.
  Compiled for one model per device per dispatch, its models batched (vmap) as on an
  accelerator; the state of all the models a device holds is counted from their shapes."""
  del spec
  loop = config.finetune
  mesh = mesh_lib.make_mesh(loop.mesh, devices or jax.devices())
  axis = loop.ensemble.get('model_axis', 'model')
  ways = dict(mesh.shape).get(axis, 1)
  init_fn, _ = experiment.pretrain_model(config)
  loss_fn = lm.make_loss_fn(experiment.make_model(config), per_example=True)
  tx = train_lib.make_optimizer(loop.optimizer, 1000)

  def init(rng):
    params, opt_state, model_state = step_lib.init_one(init_fn, tx, rng)
    return step_lib.EnsembleState(step=jnp.zeros((), jnp.int32), params=params,
                                  opt_state=opt_state, model_state=model_state,
                                  nonfinite_step=jnp.full((), -1, jnp.int32))

  one = jax.eval_shape(init, jax.random.key(0))
  stack = lambda tree: jax.tree.map(lambda a: jax.ShapeDtypeStruct((ways,) + a.shape, a.dtype),
                                    tree)
  state = step_lib.EnsembleState(step=one.step, params=stack(one.params),
                                 opt_state=stack(one.opt_state),
                                 model_state=stack(one.model_state),
                                 nonfinite_step=stack(one.nonfinite_step))
  on_models = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(axis))
  replicated = mesh_lib.replicated(mesh)
  shardings = jax.tree.map(lambda a: on_models if a.shape else replicated, state)
  rows = config.train_examples_per_task * len(config.tasks)
  width = config.finetune_length
  data = {'tokens': jax.ShapeDtypeStruct((rows, width + 1), jnp.int32, sharding=replicated),
          'weights': jax.ShapeDtypeStruct((rows, width), jnp.float32, sharding=replicated)}
  weights = jax.ShapeDtypeStruct((ways, rows), jnp.float32, sharding=on_models)
  indices = jax.ShapeDtypeStruct((1, ways, loop.batch_size), jnp.int32,
                                 sharding=jax.sharding.NamedSharding(
                                     mesh, jax.sharding.PartitionSpec(None, axis)))
  step = step_lib.make_step(loss_fn, tx, 0, batched=True, model_axis=axis)
  jitted = jax.jit(step, donate_argnums=(0,), static_argnums=(5,),
                   out_shardings=(shardings, on_models))
  with jax.set_mesh(mesh):
    args, outs, alias, temps = memory.compiled_memory(
        jitted, memory._abstract(state, shardings), data, weights, indices,  # pylint: disable=protected-access
        jax.ShapeDtypeStruct((), jnp.int32, sharding=replicated), 0)
  per_device = -(-loop.ensemble.num_models // ways)
  nbytes = lambda tree: sum(int(np.prod(a.shape, dtype=np.int64)) * np.dtype(a.dtype).itemsize
                            for a in jax.tree.leaves(tree))
  params, opt = nbytes(one.params), nbytes(one.opt_state)
  one_model = params + opt + nbytes(one.model_state)
  return memory.Estimate(
      params=params * per_device, optimizer=opt * per_device,
      other_arguments=max(0, args - one_model), outputs=max(0, outs - alias), temporaries=temps,
      devices=mesh.size,
      note=(f'pause fine-tuning ensemble (common.ensemble, vmap), {loop.ensemble.num_models} '
            f'models, {per_device} per device, batch {loop.batch_size} x {width + 1} each, mesh '
            f'{dict(mesh.shape)}; temporaries of a 1-model-per-device dispatch'))

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

import jax.numpy as jnp
import ml_collections

from common import lm
from common import memory
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
  init_fn, _ = experiment.pretrain_model(config)
  loss_fn = lm.make_loss_fn(experiment.make_model(config), per_example=True)
  rows = config.train_examples_per_task * len(config.tasks)
  width = config.finetune_length
  data = {'tokens': ((rows, width + 1), jnp.int32), 'weights': ((rows, width), jnp.float32)}
  return memory.ensemble_train_step(
      loop, init_fn, loss_fn, data, loop.ensemble.num_models, devices,
      model_axis=loop.ensemble.get('model_axis', 'model'),
      note=f'pause fine-tuning ensemble (common.ensemble), rows of {width + 1} tokens')

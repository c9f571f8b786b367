"""Per-device memory of muse_mrf's train steps at a variant's real batch and mesh
(common.memory.train_step, compiled ahead of time on the devices at hand, nothing allocated).

    rehearsal.memory = {'step': 'muse_mrf.memory:train_steps', 'num_classes': 1000}

Each step is built by the functions the experiment trains with (muse_mrf.training): the VQ
tokenizer's step on image batches, the backbone's on token batches and the MRF layer's (the
frozen backbone in its model_state) on token batches. The estimate returned is the largest of
them; its note gives each one's total.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from common import memory as memory_lib
from common.data import loader
from muse_mrf import tokenizers
from muse_mrf import training

PHASES = ('tokenizer', 'backbone', 'mrf')


def _num_classes(config, spec) -> int:
  if spec.get('num_classes') is not None:
    return int(spec.num_classes)
  return loader.num_classes(config.dataset)


def tokenizer_step(config: ml_collections.ConfigDict, spec, devices=None) -> memory_lib.Estimate:
  """The VQ autoencoder's step on tokenizer_loop.batch_size images of image_size."""
  del spec
  size, channels = int(config.image_size), 3
  model = training.make_vq(config, channels)
  sample = jnp.zeros((1, size, size, channels), jnp.float32)
  loop = config.tokenizer_loop
  return memory_lib.train_step(
      loop, lambda rng: model.init(rng, sample),
      tokenizers.make_vq_loss_fn(model, config.tokenizer.beta),
      {'inputs': ((loop.batch_size, size, size, channels), jnp.float32)}, devices,
      note='muse_mrf tokenizer (VQ) step')


def _tokens(loop, grid) -> dict:
  return {'tokens': ((loop.batch_size, grid.grid[0] * grid.grid[1]), jnp.int32),
          'label': ((loop.batch_size,), jnp.int32)}


def backbone_step(config: ml_collections.ConfigDict, spec, devices=None) -> memory_lib.Estimate:
  """The masked-token backbone's step on backbone.batch_size token grids."""
  grid = training.token_grid(config)
  model = training.make_backbone(config, grid, _num_classes(config, spec))
  return memory_lib.train_step(
      config.backbone, training.backbone_init_fn(model), training.backbone_loss_fn(config, model),
      _tokens(config.backbone, grid), devices, note='muse_mrf backbone step')


def mrf_step(config: ml_collections.ConfigDict, spec, devices=None) -> memory_lib.Estimate:
  """The MRF layer's step on mrf.batch_size token grids, the frozen backbone in model_state."""
  grid = training.token_grid(config)
  backbone = training.make_backbone(config, grid, _num_classes(config, spec))
  layer = training.make_mrf(config, grid)
  backbone_init = training.backbone_init_fn(backbone)
  # The backbone's parameters unboxed, as the MRF run receives them from the backbone's run.
  init_fn = lambda rng: training.mrf_variables(layer, backbone, rng,
                                                nn.meta.unbox(backbone_init(rng))['params'])
  return memory_lib.train_step(
      config.mrf, init_fn, training.mrf_loss_fn(config, backbone, layer),
      _tokens(config.mrf, grid), devices, note='muse_mrf MRF step (backbone frozen)')


_STEPS = {'tokenizer': tokenizer_step, 'backbone': backbone_step, 'mrf': mrf_step}


def train_steps(config: ml_collections.ConfigDict, spec, devices=None) -> memory_lib.Estimate:
  """The largest per-device estimate of spec.phases (default: tokenizer, backbone, MRF); the
  note lists every phase's total."""
  phases = tuple(spec.get('phases') or PHASES)
  unknown = [p for p in phases if p not in _STEPS]
  if unknown:
    raise ValueError(f'rehearsal.memory.phases={phases!r}: {unknown} are not among {PHASES}.')
  estimates = {p: _STEPS[p](config, spec, devices or jax.devices()) for p in phases}
  name = max(estimates, key=lambda p: estimates[p].total)
  totals = ', '.join(f'{p} {e.total / memory_lib.GiB:.2f} GiB' for p, e in estimates.items())
  largest = estimates[name]
  return dataclasses.replace(largest, note=f'{largest.note}; the largest of: {totals}')

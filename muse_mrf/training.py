"""Training the experiment's models with the common loop (each a resumable common.train run): the
tokenizer (a VQ autoencoder when asked), the masked-token backbone, and the MRF layer on the
frozen backbone at late-stage masking rates.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from common import mesh as mesh_lib
from common import train as train_lib
from common.data import pipeline
from common.models import transformer
from muse_mrf import maskgit
from muse_mrf import mrf as mrf_lib
from muse_mrf import tokenizers


@dataclasses.dataclass(frozen=True)
class TokenGrid:
  """What the backbone and the MRF need of a tokenizer: its codebook and token grid."""
  codebook_size: int
  grid: tuple[int, int]


def token_grid(config) -> TokenGrid:
  """The VQ tokenizer's codebook and grid from the config alone (streamed input: images of
  config.image_size, f = 2^num_downsamples), for building the models before any data."""
  side = int(config.image_size) // 2 ** int(config.tokenizer.num_downsamples)
  return TokenGrid(int(config.tokenizer.codebook_size), (side, side))


def make_vq(config, channels: int) -> tokenizers.VQAutoencoder:
  tok = config.tokenizer
  return tokenizers.VQAutoencoder(codebook_size=tok.codebook_size, embed_dim=tok.embed_dim,
                                  width=tok.width, num_downsamples=tok.num_downsamples,
                                  channels=channels)


def make_tokenizer(config, train_images: np.ndarray | None, workdir: str, *,
                   image_shape: tuple[int, ...] | None = None,
                   train_iter: Callable[[], pipeline.BatchOrder] | None = None):
  """The tokenizer of config.tokenizer.kind: fitted on `train_images` (in memory), or for the VQ
  autoencoder trained on `train_iter()` (a stream of {'inputs': images of `image_shape`}) when no
  images are given; a trained VQ is saved under workdir/tokenizer and loaded by a rerun."""
  tok = config.tokenizer
  shape = tuple(image_shape or train_images.shape[1:])
  if tok.kind == 'grey':
    return tokenizers.GreyLevelTokenizer(levels=tok.levels, image_shape=shape)
  if tok.kind == 'kmeans':
    return tokenizers.KMeansPatchTokenizer(tok.codebook_size, tok.patch, shape).fit(
        train_images, seed=config.seed)
  path = os.path.join(workdir, 'tokenizer', 'vq.msgpack')
  if os.path.exists(path):
    return tokenizers.VQTokenizer.load(path, tok.codebook_size)
  model = make_vq(config, shape[-1])
  sample = jnp.zeros((1,) + shape, jnp.float32)
  batches = (train_iter() if train_images is None else pipeline.BatchIterator(
      {'inputs': train_images}, config.tokenizer_loop.batch_size, seed=config.tokenizer_loop.seed))
  result = train_lib.train(
      config.tokenizer_loop, os.path.join(workdir, 'tokenizer'),
      init_fn=lambda rng: model.init(rng, sample),
      loss_fn=tokenizers.make_vq_loss_fn(model, tok.beta), train_iter=batches,
      identity={'tokenizer': tok.to_dict()})
  # On the host (gathered from every process when sharded): the tokenizer encodes each process's
  # own rows on its own device, as a loaded one does.
  params = jax.tree.map(jnp.asarray, mesh_lib.fetch(result.state.params))
  vq = tokenizers.VQTokenizer(model, params, shape)
  if jax.process_index() == 0:
    vq.save(path)
  return vq


def make_backbone(config, tokenizer, num_classes: int) -> transformer.MaskedTokenTransformer:
  """`tokenizer`: a tokenizer or a TokenGrid (its codebook_size and grid)."""
  m = config.model
  return transformer.MaskedTokenTransformer(
      codebook_size=tokenizer.codebook_size, num_classes=num_classes,
      num_tokens=tokenizer.grid[0] * tokenizer.grid[1], num_layers=m.num_layers,
      d_model=m.d_model, num_heads=m.num_heads, mlp_dim=m.mlp_dim, attention=m.attention)


def backbone_init_fn(model):
  sample_t = jnp.full((1, model.num_tokens), model.mask_id, jnp.int32)
  sample_l = jnp.zeros((1,), jnp.int32) if model.num_classes else None
  return lambda rng: model.init(rng, sample_t, sample_l)


def backbone_loss_fn(config, model):
  return maskgit.make_loss_fn(model, schedule=config.mask_schedule,
                              label_smoothing=config.label_smoothing)


def token_batches(loop, tokens: np.ndarray, labels: np.ndarray) -> pipeline.BatchIterator:
  """In memory: batches {'tokens', 'label'} of the tokenised training set."""
  return pipeline.BatchIterator({'tokens': tokens, 'label': labels}, loop.batch_size,
                                seed=loop.seed)


def train_backbone(config, model, train_iter: pipeline.BatchOrder, workdir: str):
  """`train_iter`: batches {'tokens', 'label'} (token_batches in memory, a stream of tokens)."""
  return train_lib.train(
      config.backbone, workdir, init_fn=backbone_init_fn(model),
      loss_fn=backbone_loss_fn(config, model), train_iter=train_iter,
      identity={'model': config.model.to_dict(), 'schedule': config.mask_schedule,
                'label_smoothing': config.label_smoothing, 'codebook': model.codebook_size})


def make_mrf(config, tokenizer) -> mrf_lib.MRFLayer:
  m = config.mrf_layer
  return mrf_lib.MRFLayer(codebook_size=tokenizer.codebook_size, grid=tuple(tokenizer.grid),
                          window=m.window, iterations=m.iterations, num_kernels=m.num_kernels,
                          rank=m.rank)


def make_mrf_loss_fn(backbone, layer, *, schedule: str, r_range: tuple[float, float],
                     label_smoothing: float = 0.0):
  """Cross-entropy of the MRF's Q against the real tokens at masked positions, masks drawn at
  late-stage rates gamma(r), r ~ U[r_range); the frozen backbone's parameters ride in
  model_state['backbone'] (no gradient, no optimizer state)."""

  def loss_fn(params, model_state, batch, rng):
    tokens = batch['tokens']
    rng_rate, rng_mask = jax.random.split(rng)
    rates = maskgit.mask_rate(rng_rate, tokens.shape[:1], schedule, *r_range)
    masked = maskgit.random_mask(rng_mask, tokens.shape[1], rates)
    inputs = jnp.where(masked, backbone.mask_id, tokens)
    labels = batch['label'] if backbone.num_classes else None
    logits = jax.lax.stop_gradient(
        maskgit.backbone_logits(backbone, model_state['backbone'], inputs, labels))
    refined = layer.apply({'params': params}, logits, tokens, ~masked)
    loss = mrf_lib.masked_cross_entropy(refined, tokens, masked, label_smoothing)
    base = mrf_lib.masked_cross_entropy(logits, tokens, masked, label_smoothing)
    return loss, ({'backbone_ce': base, 'gain': base - loss}, model_state)

  return loss_fn


def mrf_variables(layer, backbone, rng, backbone_params):
  """The MRF run's variables: the layer's, and the frozen backbone's parameters (unboxed arrays,
  as a run's state holds them) in model_state['backbone'] (no gradient, no optimizer state),
  boxed again with the backbone's own logical axes, so that they shard as the backbone's run
  shards them (FSDP: split over the devices) instead of a whole copy on every device."""
  n, v = backbone.num_tokens, backbone.codebook_size
  sample = (jnp.zeros((1, n, v)), jnp.zeros((1, n), jnp.int32), jnp.zeros((1, n), bool))
  boxes = jax.eval_shape(backbone_init_fn(backbone), rng)['params']
  is_box = lambda x: isinstance(x, nn.meta.AxisMetadata)
  frozen = jax.tree.map(lambda box, value: box.replace_boxed(value) if is_box(box) else value,
                        boxes, backbone_params, is_leaf=is_box)
  return {**layer.init(rng, *sample), 'backbone': frozen}


def mrf_loss_fn(config, backbone, layer):
  return make_mrf_loss_fn(backbone, layer, schedule=config.mask_schedule,
                          r_range=tuple(config.mrf_r_range))


def train_mrf(config, backbone, backbone_params, layer, train_iter: pipeline.BatchOrder,
              workdir: str):
  """`train_iter`: batches {'tokens', 'label'}, as for the backbone."""
  return train_lib.train(
      config.mrf, workdir,
      init_fn=lambda rng: mrf_variables(layer, backbone, rng, backbone_params),
      loss_fn=mrf_loss_fn(config, backbone, layer), train_iter=train_iter,
      identity={'mrf_layer': config.mrf_layer.to_dict(), 'r_range': list(config.mrf_r_range),
                'model': config.model.to_dict()})

"""Training the experiment's models with the common loop (each a resumable common.train run): the
tokenizer (a VQ autoencoder when asked), the masked-token backbone, and the MRF layer on the
frozen backbone at late-stage masking rates.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from common import train as train_lib
from common.data import pipeline
from common.models import transformer
from muse_mrf import maskgit
from muse_mrf import mrf as mrf_lib
from muse_mrf import tokenizers


def make_tokenizer(config, train_images: np.ndarray, workdir: str):
  tok = config.tokenizer
  shape = tuple(train_images.shape[1:])
  if tok.kind == 'grey':
    return tokenizers.GreyLevelTokenizer(levels=tok.levels, image_shape=shape)
  if tok.kind == 'kmeans':
    return tokenizers.KMeansPatchTokenizer(tok.codebook_size, tok.patch, shape).fit(
        train_images, seed=config.seed)
  path = os.path.join(workdir, 'tokenizer', 'vq.msgpack')
  if os.path.exists(path):
    return tokenizers.VQTokenizer.load(path, tok.codebook_size)
  model = tokenizers.VQAutoencoder(codebook_size=tok.codebook_size, embed_dim=tok.embed_dim,
                                   width=tok.width, num_downsamples=tok.num_downsamples,
                                   channels=shape[-1])
  sample = jnp.zeros((1,) + shape, jnp.float32)
  result = train_lib.train(
      config.tokenizer_loop, os.path.join(workdir, 'tokenizer'),
      init_fn=lambda rng: model.init(rng, sample), loss_fn=tokenizers.make_vq_loss_fn(
          model, tok.beta), train_iter=pipeline.BatchIterator(
              {'inputs': train_images}, config.tokenizer_loop.batch_size,
              seed=config.tokenizer_loop.seed), identity={'tokenizer': tok.to_dict()})
  vq = tokenizers.VQTokenizer(model, result.state.params, shape)
  vq.save(path)
  return vq


def make_backbone(config, tokenizer, num_classes: int) -> transformer.MaskedTokenTransformer:
  m = config.model
  return transformer.MaskedTokenTransformer(
      codebook_size=tokenizer.codebook_size, num_classes=num_classes,
      num_tokens=tokenizer.grid[0] * tokenizer.grid[1], num_layers=m.num_layers,
      d_model=m.d_model, num_heads=m.num_heads, mlp_dim=m.mlp_dim, attention=m.attention)


def train_backbone(config, model, tokens, labels, workdir: str):
  sample_t = jnp.full((1, model.num_tokens), model.mask_id, jnp.int32)
  sample_l = jnp.zeros((1,), jnp.int32) if model.num_classes else None
  return train_lib.train(
      config.backbone, workdir, init_fn=lambda rng: model.init(rng, sample_t, sample_l),
      loss_fn=maskgit.make_loss_fn(model, schedule=config.mask_schedule,
                                   label_smoothing=config.label_smoothing),
      train_iter=pipeline.BatchIterator({'tokens': tokens, 'label': labels},
                                        config.backbone.batch_size, seed=config.backbone.seed),
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


def train_mrf(config, backbone, backbone_params, layer, tokens, labels, workdir: str):
  n, v = backbone.num_tokens, backbone.codebook_size
  sample = (jnp.zeros((1, n, v)), jnp.zeros((1, n), jnp.int32), jnp.zeros((1, n), bool))
  init_fn = lambda rng: {**layer.init(rng, *sample), 'backbone': backbone_params}
  return train_lib.train(
      config.mrf, workdir, init_fn=init_fn,
      loss_fn=make_mrf_loss_fn(backbone, layer, schedule=config.mask_schedule,
                               r_range=tuple(config.mrf_r_range)),
      train_iter=pipeline.BatchIterator({'tokens': tokens, 'label': labels},
                                        config.mrf.batch_size, seed=config.mrf.seed),
      identity={'mrf_layer': config.mrf_layer.to_dict(), 'r_range': list(config.mrf_r_range),
                'model': config.model.to_dict()})

"""Image tokenizers: images (B, H, W, C) in [0, 1] <-> token grids (B, h * w) of codebook ids.

- GreyLevelTokenizer: fixed, for CPU: each pixel quantised to K grey levels (digits: 64 tokens).
- KMeansPatchTokenizer: fixed once fitted: k-means over p x p patches (numpy, seeded).
- VQAutoencoder / VQTokenizer: the trainable VQ-VAE for real images: convolutional encoder,
  codebook, commitment loss, straight-through estimator, convolutional decoder; saved and loaded
  with its codebook (`save` / `VQTokenizer.load`).

Every tokenizer has `grid` (h, w), `codebook_size`, `encode(images)` and `decode(tokens)`; a token
grid of another size or ids outside the codebook are refused with TokenizerError.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from common import mesh as mesh_lib


class TokenizerError(ValueError):
  """Images or token grids that do not fit the tokenizer, or a checkpoint that does not fit."""


def check_tokens(tokens, grid: tuple[int, int], codebook_size: int) -> np.ndarray:
  tokens = np.asarray(tokens)
  n = grid[0] * grid[1]
  if tokens.ndim != 2 or tokens.shape[1] != n:
    raise TokenizerError(f'Token grid of shape {tokens.shape} does not match the tokenizer: '
                         f'expected (batch, {n}) for its {grid[0]} x {grid[1]} grid.')
  if tokens.size and (tokens.min() < 0 or tokens.max() >= codebook_size):
    raise TokenizerError(f'Token ids range over [{tokens.min()}, {tokens.max()}], outside the '
                         f'codebook [0, {codebook_size}).')
  return tokens


def _check_images(images, shape: tuple[int, ...], name: str) -> np.ndarray:
  images = np.asarray(images, np.float32)
  if images.ndim != 4 or images.shape[1:] != tuple(shape):
    raise TokenizerError(f'{name} takes images of shape (batch,) + {tuple(shape)}; got '
                         f'{images.shape}.')
  return images


@dataclasses.dataclass(frozen=True)
class GreyLevelTokenizer:
  """Pixel -> round(x (K - 1)) for images in [0, 1]; decode gives the level's grey value."""
  levels: int = 8
  image_shape: tuple[int, int, int] = (8, 8, 1)

  def __post_init__(self):
    if self.levels < 2 or self.image_shape[-1] != 1:
      raise TokenizerError(f'levels={self.levels} (>= 2) for grey images (C = 1); got image '
                           f'shape {self.image_shape}.')

  @property
  def grid(self) -> tuple[int, int]:
    return self.image_shape[:2]

  @property
  def codebook_size(self) -> int:
    return self.levels

  def encode(self, images) -> np.ndarray:
    images = _check_images(images, self.image_shape, 'GreyLevelTokenizer')
    ids = np.rint(np.clip(images, 0.0, 1.0) * (self.levels - 1)).astype(np.int32)
    return ids.reshape(len(ids), -1)

  def decode(self, tokens) -> np.ndarray:
    tokens = check_tokens(tokens, self.grid, self.codebook_size)
    return (tokens.astype(np.float32) / (self.levels - 1)).reshape((-1,) + self.image_shape)


def _patches(images: np.ndarray, p: int) -> np.ndarray:
  b, h, w, c = images.shape
  x = images.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, (h // p) * (w // p), p * p * c)


@dataclasses.dataclass
class KMeansPatchTokenizer:
  """k-means codebook over p x p patches; `fit` on training images first."""
  codebook_size: int = 16
  patch: int = 2
  image_shape: tuple[int, int, int] = (8, 8, 1)
  centers: np.ndarray | None = None

  @property
  def grid(self) -> tuple[int, int]:
    return self.image_shape[0] // self.patch, self.image_shape[1] // self.patch

  def fit(self, images, iterations: int = 20, seed: int = 0) -> 'KMeansPatchTokenizer':
    images = _check_images(images, self.image_shape, 'KMeansPatchTokenizer')
    x = _patches(images, self.patch).reshape(-1, self.patch ** 2 * self.image_shape[-1])
    rng = np.random.default_rng(seed)
    centers = x[rng.choice(len(x), self.codebook_size, replace=False)].copy()
    for _ in range(iterations):
      assign = ((x[:, None] - centers[None]) ** 2).sum(-1).argmin(-1)
      for k in range(self.codebook_size):
        members = x[assign == k]
        centers[k] = members.mean(0) if len(members) else x[rng.integers(len(x))]
    self.centers = centers
    return self

  def encode(self, images) -> np.ndarray:
    if self.centers is None:
      raise TokenizerError('KMeansPatchTokenizer is not fitted: call fit(images) first.')
    images = _check_images(images, self.image_shape, 'KMeansPatchTokenizer')
    x = _patches(images, self.patch)
    return ((x[:, :, None] - self.centers[None, None]) ** 2).sum(-1).argmin(-1).astype(np.int32)

  def decode(self, tokens) -> np.ndarray:
    if self.centers is None:
      raise TokenizerError('KMeansPatchTokenizer is not fitted: call fit(images) first.')
    tokens = check_tokens(tokens, self.grid, self.codebook_size)
    (gh, gw), p, c = self.grid, self.patch, self.image_shape[-1]
    x = self.centers[tokens].reshape(len(tokens), gh, gw, p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape((len(tokens),) + tuple(self.image_shape))


# ---------------------------------------------------------------------------------------------
# The trainable VQ autoencoder.
# ---------------------------------------------------------------------------------------------
class VQAutoencoder(nn.Module):
  """Images (B, H, W, C) -> (B, H/f, W/f) codes -> images; f = 2^num_downsamples.

  `__call__` returns (reconstruction, {'codebook_loss', 'commitment_loss', 'tokens'}): the
  codebook loss ||sg(z_e) - e||^2 moves the codes, the commitment loss ||z_e - sg(e)||^2 (weighted
  by beta in `vq_loss`) keeps the encoder near them, and the decoder reads z_e + sg(e - z_e),
  the straight-through estimator, so the reconstruction's gradient reaches the encoder.
  """
  codebook_size: int = 512
  embed_dim: int = 32
  width: int = 64
  num_downsamples: int = 2
  channels: int = 1

  def setup(self):
    self.codebook = self.param('codebook', nn.initializers.variance_scaling(
        1.0, 'fan_in', 'uniform'), (self.codebook_size, self.embed_dim))
    self.enc = [nn.Conv(self.width, (4, 4), strides=2, name=f'enc_{i}')
                for i in range(self.num_downsamples)]
    self.enc_out = nn.Conv(self.embed_dim, (1, 1), name='enc_out')
    self.dec_in = nn.Conv(self.width, (3, 3), name='dec_in')
    self.dec = [nn.ConvTranspose(self.width, (4, 4), strides=(2, 2), name=f'dec_{i}')
                for i in range(self.num_downsamples)]
    self.dec_out = nn.Conv(self.channels, (3, 3), name='dec_out')

  def encode_continuous(self, images):
    x = images
    for conv in self.enc:
      x = nn.gelu(conv(x))
    return self.enc_out(x)

  def quantise(self, z):
    """Nearest code per position: (ids (B, h, w), code vectors (B, h, w, D))."""
    code_norms = jnp.sum(self.codebook ** 2, -1).reshape((1,) * (z.ndim - 1) + (-1,))
    d = jnp.sum(z ** 2, -1, keepdims=True) - 2 * z @ self.codebook.T + code_norms
    ids = jnp.argmin(d, -1)
    return ids, self.codebook[ids]

  def decode_codes(self, e):
    x = nn.gelu(self.dec_in(e))
    for conv in self.dec:
      x = nn.gelu(conv(x))
    return nn.sigmoid(self.dec_out(x))

  def encode(self, images):
    return self.quantise(self.encode_continuous(images))[0]

  def decode(self, ids):
    return self.decode_codes(self.codebook[ids])

  def __call__(self, images, train: bool = False):
    del train
    z = self.encode_continuous(images)
    ids, e = self.quantise(z)
    codebook_loss = jnp.mean((jax.lax.stop_gradient(z) - e) ** 2)
    commitment_loss = jnp.mean((z - jax.lax.stop_gradient(e)) ** 2)
    z_q = z + jax.lax.stop_gradient(e - z)   # straight-through
    return self.decode_codes(z_q), {'codebook_loss': codebook_loss,
                                    'commitment_loss': commitment_loss, 'tokens': ids}


def make_vq_loss_fn(model: VQAutoencoder, beta: float = 0.25):
  """common.train's loss_fn for batches {'inputs': images}: MSE + codebook + beta commitment."""

  def loss_fn(params, model_state, batch, rng):
    del rng
    recon, aux = model.apply({'params': params}, batch['inputs'])
    mse = jnp.mean((recon - batch['inputs']) ** 2)
    loss = mse + aux['codebook_loss'] + beta * aux['commitment_loss']
    used = jnp.sum(jnp.bincount(aux['tokens'].reshape(-1), length=model.codebook_size) > 0)
    return loss, ({'mse': mse, 'commitment': aux['commitment_loss'],
                   'codes_used': used.astype(jnp.float32)}, model_state)

  return loss_fn


@dataclasses.dataclass
class VQTokenizer:
  """A trained VQAutoencoder with its parameters (the codebook among them)."""
  model: VQAutoencoder
  params: Any
  image_shape: tuple[int, int, int]

  @property
  def codebook_size(self) -> int:
    return self.model.codebook_size

  @property
  def grid(self) -> tuple[int, int]:
    f = 2 ** self.model.num_downsamples
    return self.image_shape[0] // f, self.image_shape[1] // f

  @functools.cached_property
  def _encode(self):
    return jax.jit(lambda p, x: self.model.apply({'params': p}, x, method='encode'))

  @functools.cached_property
  def _decode(self):
    return jax.jit(lambda p, t: self.model.apply({'params': p}, t, method='decode'))

  def encode(self, images, batch_size: int = 256) -> np.ndarray:
    images = _check_images(images, self.image_shape, 'VQTokenizer')
    out = [np.asarray(self._encode(self.params, images[i:i + batch_size]))
           for i in range(0, len(images), batch_size)]
    return np.concatenate(out).reshape(len(images), -1).astype(np.int32)

  def decode(self, tokens) -> np.ndarray:
    tokens = check_tokens(tokens, self.grid, self.codebook_size)
    grid = tokens.reshape((len(tokens),) + self.grid)
    return np.asarray(self._decode(self.params, grid))

  def save(self, path: str) -> str:
    """One msgpack file: the module's fields, the image shape and the parameters."""
    meta = {'model': {f.name: getattr(self.model, f.name) for f in dataclasses.fields(
        self.model) if f.name not in ('parent', 'name')}, 'image_shape': list(self.image_shape)}
    blob = flax.serialization.msgpack_serialize(
        {'meta': json.dumps(meta), 'params': mesh_lib.fetch(self.params)})
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + '.tmp', 'wb') as f:
      f.write(blob)
    os.replace(path + '.tmp', path)
    return path

  @classmethod
  def load(cls, path: str, codebook_size: int | None = None) -> 'VQTokenizer':
    """Loads a saved tokenizer; `codebook_size`, when given, must be the saved one."""
    with open(path, 'rb') as f:
      state = flax.serialization.msgpack_restore(f.read())
    meta = json.loads(state['meta'])
    have = meta['model']['codebook_size']
    if codebook_size is not None and codebook_size != have:
      raise TokenizerError(f'{path} holds a codebook of {have} codes, not the {codebook_size} '
                           'asked for.')
    return cls(VQAutoencoder(**meta['model']), jax.tree.map(jnp.asarray, state['params']),
               tuple(meta['image_shape']))

"""ResNets with basic blocks, 1-D (signals such as mnist1d) or 2-D (images), width and depth knobs."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from common.models import layers


class BasicBlock(nn.Module):
  features: int
  strides: int
  ndim: int
  norm: str
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    k = (3,) * self.ndim
    s = (self.strides,) * self.ndim
    y = layers.conv(self.features, k, s, dtype=self.dtype, name='conv1')(x)
    y = nn.relu(layers.norm(self.norm, self.dtype, name='norm1')(y, train))
    y = layers.conv(self.features, k, dtype=self.dtype, name='conv2')(y)
    # Zero-init the last scale so each block starts as the identity (helps deep nets train).
    y = layers.norm(self.norm, self.dtype, name='norm2',
                    scale_init=nn.initializers.zeros_init())(y, train)
    if x.shape[-1] != self.features or self.strides != 1:
      x = layers.conv(self.features, (1,) * self.ndim, s, dtype=self.dtype, name='proj')(x)
      x = layers.norm(self.norm, self.dtype, name='proj_norm')(x, train)
    return nn.relu(x + y)


class ResNet(nn.Module):
  """Stem conv, len(stage_sizes) stages of basic blocks (stride 2 from the second), pool, readout.

  Attributes:
    stage_sizes: blocks per stage; (2, 2, 2, 2) is ResNet-18.
    width: channels of the first stage (doubling each stage); the width knob.
    ndim: 1 for (N, L, C) signals, 2 for (N, H, W, C) images.
    norm: 'group' (default: no mutable state), 'batch', 'layer' or 'none'.
    stem_strides: 1 for small inputs (8x8 digits, mnist1d, CIFAR), 2 for ImageNet.
  """
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  width: int = 16
  num_outputs: int = 10
  ndim: int = 2
  norm: str = 'group'
  stem_strides: int = 1
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool = False, return_features: bool = False):
    if x.ndim != self.ndim + 2:
      raise ValueError(f'ResNet(ndim={self.ndim}) expects inputs of rank {self.ndim + 2} '
                       f'(batch, spatial..., channels), got shape {x.shape}.')
    x = x.astype(self.dtype)
    x = layers.conv(self.width, (3,) * self.ndim, self.stem_strides, dtype=self.dtype,
                    name='stem')(x)
    x = nn.relu(layers.norm(self.norm, self.dtype, name='stem_norm')(x, train))
    for i, blocks in enumerate(self.stage_sizes):
      for j in range(blocks):
        x = BasicBlock(self.width * 2**i, 2 if (i > 0 and j == 0) else 1, self.ndim, self.norm,
                       self.dtype, name=f'stage{i}_block{j}')(x, train)
    features = jnp.mean(x, axis=tuple(range(1, 1 + self.ndim)))
    logits = layers.dense(self.num_outputs, ('embed', 'classes'), dtype=self.dtype,
                          name='readout')(features)
    return (logits, features) if return_features else logits

"""Dense and conv layers whose parameters carry logical axis names for the sharding rules."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp


def dense(features: int, axes: tuple[str, str], use_bias: bool = True,
          dtype: jnp.dtype = jnp.float32, kernel_init=nn.initializers.lecun_normal(),
          name: str | None = None) -> nn.Dense:
  return nn.Dense(
      features, use_bias=use_bias, dtype=dtype, name=name,
      kernel_init=nn.with_logical_partitioning(kernel_init, axes),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (axes[1],)))


def conv(features: int, kernel_size: Sequence[int], strides: Sequence[int] | int = 1,
         use_bias: bool = False, dtype: jnp.dtype = jnp.float32, name: str | None = None,
         kernel_init=nn.initializers.he_normal()) -> nn.Conv:
  taps = ('spatial',) * len(kernel_size)
  return nn.Conv(
      features, tuple(kernel_size), strides=strides, padding='SAME', use_bias=use_bias,
      dtype=dtype, name=name,
      kernel_init=nn.with_logical_partitioning(kernel_init, taps + ('conv_in', 'conv_out')),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ('conv_out',)))


def norm(kind: str, dtype: jnp.dtype = jnp.float32, name: str | None = None,
         scale_init=nn.initializers.ones_init()):
  """'batch' (running statistics in the 'batch_stats' collection), 'group', 'layer' or 'none'."""
  scale = nn.with_logical_partitioning(scale_init, ('conv_out',))
  bias = nn.with_logical_partitioning(nn.initializers.zeros_init(), ('conv_out',))
  if kind == 'batch':
    return lambda x, train: nn.BatchNorm(use_running_average=not train, momentum=0.9,
                                         dtype=dtype, scale_init=scale, bias_init=bias,
                                         name=name)(x)
  if kind == 'group':
    return lambda x, train: nn.GroupNorm(num_groups=None, group_size=min(16, x.shape[-1]),
                                         dtype=dtype, scale_init=scale, bias_init=bias,
                                         name=name)(x)
  if kind == 'layer':
    return lambda x, train: nn.LayerNorm(dtype=dtype, scale_init=scale, bias_init=bias,
                                         name=name)(x)
  if kind == 'none':
    return lambda x, train: x
  raise ValueError(f'Unknown norm {kind!r}; use batch, group, layer or none.')

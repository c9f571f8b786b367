"""The mean-field parameterisation of a bias-free ReLU MLP, and the standard one as a contrast.

Depth L counts the hidden pre-activations z_1..z_L (card of Jelassi et al., arXiv 2305.07810):

    z_1 = W_1 x,   z_{l+1} = W_{l+1} relu(z_l)  (l = 1..L-1),   f(x) = W_{L+1} relu(z_L)

    W_1 ~ N(0, 1/n_in)   W_l ~ N(0, 2/n) (l = 2..L)   W_{L+1} ~ N(0, 1/n^2) mean-field
                                                                N(0, 1/n)   standard

Parameters are a dict {'first': (n_in, n), 'hidden': (L-1, n, n), 'readout': (n, k)} so that the
hidden stack runs under `lax.scan` and whole networks `vmap` over seeds.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

PARAMETERISATIONS = ('mean_field', 'standard')


def check_shape(width: int, depth: int, input_dim: int = 1, num_outputs: int = 1) -> None:
  for name, value in (('width', width), ('depth', depth), ('input_dim', input_dim),
                      ('num_outputs', num_outputs)):
    if int(value) != value or value < 1:
      raise ValueError(f'{name} must be a positive integer, got {value!r}.')


def readout_std(width: int, parameterisation: str) -> float:
  if parameterisation == 'mean_field':
    return 1.0 / width
  if parameterisation == 'standard':
    return width ** -0.5
  raise ValueError(f'Unknown parameterisation {parameterisation!r}; use {PARAMETERISATIONS}.')


def init(rng: jax.Array, input_dim: int, width: int, depth: int, num_outputs: int = 1,
         parameterisation: str = 'mean_field', *, readout_scale=None) -> dict[str, jax.Array]:
  """Draws W_1, the L-1 hidden matrices and the readout.

  `readout_scale` (optional) replaces readout_std(width, parameterisation): given as an array, it
  lets one compiled program draw the networks of both parameterisations (mup_depth.sweep).
  """
  check_shape(width, depth, input_dim, num_outputs)
  if readout_scale is None:
    readout_scale = readout_std(width, parameterisation)
  k1, k2, k3 = jax.random.split(rng, 3)
  return {
      'first': jax.random.normal(k1, (input_dim, width)) * input_dim ** -0.5,
      'hidden': jax.random.normal(k2, (depth - 1, width, width)) * (2.0 / width) ** 0.5,
      'readout': jax.random.normal(k3, (width, num_outputs)) * readout_scale,
  }


def preactivations(params: dict[str, jax.Array], x: jax.Array,
                   layer: int = -1) -> tuple[jax.Array, jax.Array]:
  """(z_layer of shape (batch, n), the output f of shape (batch, k)).

  `layer` is 1-based (1..L); -1 (default) is z_L.
  """
  depth = depth_of(params)
  layer = depth if layer == -1 else layer
  if not 1 <= layer <= depth:
    raise ValueError(f'layer must be in 1..{depth} (or -1), got {layer}.')
  z = x @ params['first']

  def step(z, w):
    z_next = jax.nn.relu(z) @ w
    return z_next, z_next

  z_last, zs = jax.lax.scan(step, z, params['hidden'])
  chosen = z if layer == 1 else zs[layer - 2]
  return chosen, jax.nn.relu(z_last) @ params['readout']


def apply(params, x):
  return preactivations(params, x)[1]


def squared_loss(params, x, y):
  """0.5 (f(x) - y)^2, averaged over the batch."""
  return 0.5 * jnp.mean(jnp.sum((apply(params, x) - y) ** 2, axis=-1))


def depth_of(params) -> int:
  return params['hidden'].shape[0] + 1

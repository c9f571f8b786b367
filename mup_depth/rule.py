"""The depth rule for users: hidden-layer learning rates scaled by (L / L_base)^(-3/2).

Tune a learning rate at depth L_base, then train at depth L with

    tx = optax.chain(optax.sgd(lr), rule.scale_hidden_by_depth(depth=L, base_depth=4,
                                                               is_hidden=rule.common_mlp_hidden))

The first layer and the readout keep the tuned rate (the card: eta* does not depend on width
except for those layers, and the L^(-3/2) law is the hidden layers').
"""

from __future__ import annotations

import re
from typing import Any, Callable

import jax
import optax

EXPONENT = -1.5


def depth_multiplier(depth: int, base_depth: int, exponent: float = EXPONENT) -> float:
  if depth < 1 or base_depth < 1:
    raise ValueError(f'depth and base_depth must be >= 1, got {depth}, {base_depth}.')
  return (depth / base_depth) ** exponent


def common_mlp_hidden(path: tuple[Any, ...]) -> bool:
  """For common.models.MLP: hidden_1..hidden_{L-1} are hidden; hidden_0 (first) and readout not."""
  names = [getattr(k, 'key', getattr(k, 'name', str(k))) for k in path]
  return any(re.fullmatch(r'hidden_([1-9]\d*)', str(n)) for n in names)


def mean_field_hidden(path: tuple[Any, ...]) -> bool:
  """For mup_depth.parameterisation: the 'hidden' stack."""
  return any(getattr(k, 'key', None) == 'hidden' for k in path)


def scale_hidden_by_depth(depth: int, base_depth: int,
                          is_hidden: Callable[[tuple[Any, ...]], bool] = common_mlp_hidden,
                          exponent: float = EXPONENT) -> optax.GradientTransformation:
  """Multiplies the updates of hidden-layer parameters by (depth / base_depth)^exponent."""
  factor = depth_multiplier(depth, base_depth, exponent)

  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    del params
    scaled = jax.tree_util.tree_map_with_path(
        lambda path, u: u * factor if is_hidden(path) else u, updates)
    return scaled, state

  return optax.GradientTransformation(init_fn, update_fn)


def depth_scaled_sgd(learning_rate: float, depth: int, base_depth: int,
                     is_hidden: Callable[[tuple[Any, ...]], bool] = common_mlp_hidden,
                     momentum: float | None = None) -> optax.GradientTransformation:
  """SGD whose hidden layers use learning_rate * (depth / base_depth)^(-3/2)."""
  return optax.chain(optax.sgd(learning_rate, momentum=momentum),
                     scale_hidden_by_depth(depth, base_depth, is_hidden))

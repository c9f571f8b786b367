"""A multilayer perceptron classifier/regressor with logical axes on every kernel."""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from common.models import layers


class MLP(nn.Module):
  """Flattens its input, then `widths` hidden layers and a linear readout of `num_outputs`.

  Attributes:
    widths: hidden layer widths, e.g. (256, 256); depth is len(widths).
    num_outputs: classes (or regression targets).
    activation: nonlinearity between layers.
    dtype: compute dtype (parameters stay float32).
  """
  widths: Sequence[int] = (128,)
  num_outputs: int = 10
  activation: Callable = nn.relu
  use_bias: bool = True
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool = False, return_features: bool = False):
    del train  # no dropout or batch statistics
    x = x.reshape((x.shape[0], -1)).astype(self.dtype)
    for i, width in enumerate(self.widths):
      x = layers.dense(width, ('embed', 'mlp'), self.use_bias, self.dtype, name=f'hidden_{i}')(x)
      x = self.activation(x)
    features = x
    logits = layers.dense(self.num_outputs, ('mlp', 'classes'), self.use_bias, self.dtype,
                          name='readout')(x)
    return (logits, features) if return_features else logits

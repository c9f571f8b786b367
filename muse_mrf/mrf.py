"""The MRF layer (MarkovGen): mean-field inference over the token grid on top of a frozen
masked-token backbone, learned by backprop (muse_mrf.kernels holds the jitted update).

    layer = MRFLayer(codebook_size=8, grid=(8, 8))              # dense mu, 3 x 3 window, 5 its
    refined = layer.apply(variables, logits, tokens, known)     # (B, N, V) -> (B, N, V)

Parameters: `spatial` (F, k, k) kernel weights w_f(d), `compat` (F, V, V) or `compat_a`,
`compat_b` (F, V, r) for mu_f = A_f B_f^T, and `unary_scale` (a learned temperature on the
backbone's logits). Initialised at the identity: mu = 0 (dense) or B = 0 (low rank), unary_scale
= 1, so the untrained layer returns the backbone's logits and Q = softmax(logits); gradients
reach mu through the (uniform, non-zero) spatial weights from the first step.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from muse_mrf import kernels
from muse_mrf.kernels import MRFError


class MRFLayer(nn.Module):
  """Backbone logits (B, N, V) over a grid N = H x W -> refined logits (B, N, V).

  Attributes:
    codebook_size: V; logits with another last axis are refused (MRFError).
    grid: (H, W), the token grid; N must equal H * W.
    window: odd k of the k x k neighbourhood.
    iterations: T_mf mean-field updates.
    num_kernels: F spatial kernels, each with its own compatibility (the paper: 1).
    rank: None for a dense (V, V) compatibility, else r of the low-rank A B^T.
  """
  codebook_size: int
  grid: tuple[int, int]
  window: int = 3
  iterations: int = 5
  num_kernels: int = 1
  rank: int | None = None

  def check(self, logits, tokens=None, known=None) -> None:
    height, width = self.grid
    if logits.ndim != 3 or logits.shape[1] != height * width:
      raise MRFError(f'logits of shape {logits.shape} do not fit the {height} x {width} token '
                     f'grid: expected (batch, {height * width}, {self.codebook_size}).')
    if logits.shape[-1] != self.codebook_size:
      raise MRFError(f'logits over {logits.shape[-1]} codes, but this MRF layer was built for '
                     f'codebook_size={self.codebook_size}.')
    if (tokens is None) != (known is None):
      raise MRFError('Give tokens and known together (or neither).')
    if tokens is not None and (tokens.shape != logits.shape[:2] or known.shape != logits.shape[:2]):
      raise MRFError(f'tokens {tokens.shape} and known {known.shape} must be {logits.shape[:2]}.')
    if self.rank is not None and (isinstance(self.rank, bool) or self.rank < 1):
      raise MRFError(f'rank={self.rank!r}: None (dense) or a whole number >= 1.')
    if self.num_kernels < 1:
      raise MRFError(f'num_kernels={self.num_kernels}: at least 1.')

  @nn.compact
  def __call__(self, logits, tokens=None, known=None):
    self.check(logits, tokens, known)
    k, f, v = self.window, self.num_kernels, self.codebook_size
    kernels.window_offsets(k)
    spatial = self.param('spatial', nn.initializers.constant(1.0 / (k * k - 1)), (f, k, k))
    if self.rank is None:
      compat = self.param('compat', nn.initializers.zeros_init(), (f, v, v))
      low_rank = None
    else:
      compat = None
      low_rank = (self.param('compat_a', nn.initializers.normal(1.0 / self.rank ** 0.5),
                             (f, v, self.rank)),
                  self.param('compat_b', nn.initializers.zeros_init(), (f, v, self.rank)))
    unary_scale = self.param('unary_scale', nn.initializers.ones_init(), ())
    height, width = self.grid
    batch = logits.shape[0]
    grid = lambda x: None if x is None else x.reshape((batch, height, width) + x.shape[2:])
    out = kernels.mean_field(grid(logits), spatial, compat=compat, low_rank=low_rank,
                             known=grid(known), known_tokens=grid(tokens),
                             unary_scale=unary_scale, iterations=self.iterations)
    return out.reshape(logits.shape)


def check_codebook(variables, codebook_size: int) -> None:
  """MRFError unless the MRF parameters (e.g. a restored checkpoint) are for `codebook_size`."""
  params = variables.get('params', variables)
  key = 'compat' if 'compat' in params else 'compat_a'
  if key not in params:
    raise MRFError(f'Not MRF parameters: no compat or compat_a among {sorted(params)}.')
  have = params[key].shape[1]
  if have != codebook_size:
    raise MRFError(f'The MRF parameters are for a codebook of {have} codes; this model has '
                   f'{codebook_size}.')


def masked_cross_entropy(logits, targets, weights, label_smoothing: float = 0.0):
  """Mean cross-entropy over positions with weight > 0 (logits (B, N, V), targets (B, N))."""
  v = logits.shape[-1]
  labels = optax.smooth_labels(jax.nn.one_hot(targets, v), label_smoothing)
  ce = optax.softmax_cross_entropy(logits, labels)
  weights = weights.astype(jnp.float32)
  return jnp.sum(ce * weights) / jnp.maximum(jnp.sum(weights), 1.0)

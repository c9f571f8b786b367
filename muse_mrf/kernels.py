"""The MRF layer's hot path: mean-field inference over a token grid, one jitted function.

    U_i(l)   = -s z_i(l)                                   unary: the frozen backbone's logits z
    repeat T_mf times:
      M_i^f(l') = sum_{d in window, d != 0} w_f(d) Q_{i+d}(l')     F depthwise spatial kernels
      Phi_i(l)  = sum_f sum_{l'} mu_f(l, l') M_i^f(l')             compatibility (energy)
      Q_i       = softmax(-U_i - Phi_i) = softmax(s z_i - Phi_i)

mu is an energy, as in the card's `softmax(-U - Phi)`: a positive mu_f(l, l') makes label l less
likely next to a neighbour that is likely l' (a Potts model rewards agreement with mu = -c I).
CRF-as-RNN writes the same update as `unary + message` with the message's sign folded into its
learned compatibility; here the sign is explicit and tested.

Positions whose token is known (decoded earlier) are clamped: their Q is the one-hot of the token,
so they send exact messages and are never updated. A known token outside the codebook is refused
when the inputs are concrete; under jit its Q is NaN (so are its neighbours' outputs), never the
all-zero one-hot that would silently send no message. Neighbours outside the grid send nothing
(zero padding). mu is dense (F, V, V), or low rank mu_f = A_f B_f^T with A, B (F, V, r): then
Phi = (window sum of Q B) A^T, O(V r) per position instead of O(V^2), the form for large codebooks
(the projection first, so the window sums move r numbers per position, not V).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


class MRFError(ValueError):
  """Inputs that do not fit the MRF layer (grid, codebook size, window, iterations)."""


def window_offsets(window: int) -> list[tuple[int, int]]:
  """The (dy, dx) offsets of a window x window neighbourhood, centre excluded, row-major."""
  if window < 3 or window % 2 == 0:
    raise MRFError(f'window={window}: use an odd size >= 3 (3 is the 8-neighbourhood).')
  r = window // 2
  return [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1) if (dy, dx) != (0, 0)]


def neighbour_messages(q: jax.Array, spatial: jax.Array) -> jax.Array:
  """M (B, H, W, F, C): each kernel's weighted sum of the neighbours' vectors.

  q: (B, H, W, C), the same for every kernel (label distributions, C = V), or (B, H, W, F, C),
  one per kernel (their low-rank projections); spatial: (F, k, k) weights w_f(d) (the centre
  entry is ignored). A depthwise convolution written as k^2 - 1 shifted adds, which XLA fuses.
  """
  window = spatial.shape[-1]
  r = window // 2
  if q.ndim == 4:
    q = q[:, :, :, None, :]
  height, width = q.shape[1], q.shape[2]
  padded = jnp.pad(q, ((0, 0), (r, r), (r, r), (0, 0), (0, 0)))
  out = None
  for dy, dx in window_offsets(window):
    # x_{i + d} for every i: the padded grid shifted by d.
    shifted = jax.lax.slice_in_dim(jax.lax.slice_in_dim(padded, r + dy, r + dy + height, axis=1),
                                   r + dx, r + dx + width, axis=2)
    term = shifted * spatial[None, None, None, :, dy + r, dx + r, None]
    out = term if out is None else out + term
  return out


def pairwise_energy(q: jax.Array, spatial: jax.Array, compat=None, low_rank=None) -> jax.Array:
  """Phi (B, H, W, V) for label distributions q (B, H, W, V).

  Dense mu (F, V, V): Phi = sum_f M_f mu_f^T with M_f the window sums of q. Low rank mu_f =
  A_f B_f^T: the window sum and B commute (both linear), so q is projected first, q B_f
  (B, H, W, F, r), and the window sums run over r numbers per position instead of V: the shifts
  cost O(r), not O(V), and the layer stays two (V x r) GEMMs per iteration.
  """
  if (compat is None) == (low_rank is None):
    raise MRFError('Give exactly one of a dense compatibility and a low-rank (A, B) pair.')
  if compat is not None:
    return jnp.einsum('bhwfk,flk->bhwl', neighbour_messages(q, spatial), compat)
  a, b = low_rank
  projected = jnp.einsum('bhwk,fkr->bhwfr', q, b)
  return jnp.einsum('bhwfr,flr->bhwl', neighbour_messages(projected, spatial), a)


def _clamped_rows(known_tokens, vocab: int, dtype):
  """The one-hot rows of the known tokens (B, H, W, V); NaN for a token outside [0, vocab)."""
  onehot = jax.nn.one_hot(known_tokens, vocab, dtype=dtype)
  in_codebook = (known_tokens >= 0) & (known_tokens < vocab)
  return jnp.where(in_codebook[..., None], onehot, jnp.nan)


def _mean_field(logits, spatial, compat, low_rank, known, known_tokens, unary_scale,
                iterations: int):
  unary = logits * unary_scale
  if known is None:
    clamp = lambda q: q
  else:
    rows = _clamped_rows(known_tokens, unary.shape[-1], unary.dtype)
    clamp = lambda q: jnp.where(known[..., None], rows, q)
  q = clamp(jax.nn.softmax(unary, axis=-1))
  out = unary
  for _ in range(iterations):  # static and small (5): unrolled, differentiable
    out = unary - pairwise_energy(q, spatial, compat, low_rank)
    q = clamp(jax.nn.softmax(out, axis=-1))
  return out


def mean_field(logits: jax.Array, spatial: jax.Array, *, compat: jax.Array | None = None,
               low_rank: tuple[jax.Array, jax.Array] | None = None,
               known: jax.Array | None = None, known_tokens: jax.Array | None = None,
               unary_scale: jax.Array | float = 1.0, iterations: int = 5) -> jax.Array:
  """Refined logits (B, H, W, V) after `iterations` mean-field updates; softmax gives Q.

  logits: (B, H, W, V) backbone logits; spatial: (F, k, k); compat: (F, V, V) or low_rank (A, B)
  each (F, V, r); known: (B, H, W) bool, known_tokens: (B, H, W) int (clamped positions; their
  output rows are not used; a known token outside [0, V) is an MRFError when concrete, NaN under
  jit). With zero pairwise weights the result is unary_scale * logits.
  """
  check_shapes(logits, spatial, compat, low_rank, known, known_tokens, iterations)
  check_known_tokens(known, known_tokens, logits.shape[-1])
  return _mean_field_jit(logits, spatial, compat=compat, low_rank=low_rank, known=known,
                         known_tokens=known_tokens, unary_scale=unary_scale,
                         iterations=iterations)


@functools.partial(jax.jit, static_argnames=('iterations',))
def _mean_field_jit(logits, spatial, *, compat, low_rank, known, known_tokens, unary_scale,
                    iterations: int):
  return _mean_field(logits, spatial, compat, low_rank, known, known_tokens, unary_scale,
                     iterations)


def check_known_tokens(known, known_tokens, vocab: int) -> None:
  """MRFError for a known position whose token is not in [0, vocab) (concrete inputs only: traced
  ones are left to the NaN clamp). Unknown positions may hold anything (e.g. the mask id)."""
  if known is None or any(isinstance(x, jax.core.Tracer) for x in (known, known_tokens)):
    return
  known, tokens = np.asarray(known), np.asarray(known_tokens)
  bad = known & ((tokens < 0) | (tokens >= vocab))
  if bad.any():
    where = tuple(int(i) for i in np.argwhere(bad)[0])
    raise MRFError(f'Known token {int(tokens[where])} at (batch, row, column) {where} is outside '
                   f'the codebook [0, {vocab}): a known position must hold a codebook id (mark it '
                   'unknown instead).')


def check_shapes(logits, spatial, compat, low_rank, known, known_tokens, iterations) -> None:
  """MRFError for shapes that do not fit (checked on shapes only, so also under jit)."""
  if logits.ndim != 4:
    raise MRFError(f'logits must be (batch, height, width, codebook); got shape {logits.shape}.')
  vocab = logits.shape[-1]
  if spatial.ndim != 3 or spatial.shape[1] != spatial.shape[2]:
    raise MRFError(f'spatial weights must be (kernels, k, k); got shape {spatial.shape}.')
  window_offsets(spatial.shape[-1])
  num_kernels = spatial.shape[0]
  if compat is not None and compat.shape != (num_kernels, vocab, vocab):
    raise MRFError(f'compatibility of shape {compat.shape} does not fit codebook size {vocab} '
                   f'and {num_kernels} kernels: expected {(num_kernels, vocab, vocab)}.')
  if low_rank is not None:
    a, b = low_rank
    if a.shape != b.shape or a.ndim != 3 or a.shape[:2] != (num_kernels, vocab):
      raise MRFError(f'low-rank factors of shapes {a.shape}, {b.shape} do not fit codebook size '
                     f'{vocab} and {num_kernels} kernels: expected ({num_kernels}, {vocab}, r).')
  if (known is None) != (known_tokens is None):
    raise MRFError('Give known and known_tokens together (or neither).')
  if known is not None and (known.shape != logits.shape[:3] or
                            known_tokens.shape != logits.shape[:3]):
    raise MRFError(f'known {known.shape} and known_tokens {known_tokens.shape} must be '
                   f'{logits.shape[:3]} (the grid of the logits).')
  if isinstance(iterations, bool) or int(iterations) != iterations or iterations < 0:
    raise MRFError(f'iterations={iterations!r}: expected a whole number >= 0.')

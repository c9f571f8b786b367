"""The standard position encodings for TransformerLM, and `build(name, ...)` for any registered one.

    from common.models import positions
    from common.models.transformer import TransformerLM
    model = TransformerLM(vocab_size=259, **positions.build('rope', num_heads=4, train_length=64))
    model = TransformerLM(vocab_size=259, encoding=functools.partial(positions.ALiBi, num_heads=4))

Absolute encodings (`LearnedPositions`, `Sinusoidal`) add to the token embeddings once; `RoPE`
rotates queries and keys in every layer; relative encodings (`ALiBi`, `Kerple`, `T5Bias`) return
`(bias_fn, params)` from `bias(length)`, where `bias_fn(params, q_start, k_start, q_len, k_len)` is
the (H, q_len, k_len) additive bias of one block of query and key positions
(common.models.attention), pure, so the block-wise kernel can evaluate and differentiate it block
by block. Future keys (i < j) get arbitrary values: the causal mask removes them.

A paper with an encoding of its own registers it under a name (`register`); fire_pe registers
FIRE and its ablations when `fire_pe.encodings` is imported. The modules are always built with
`name='position'` by the model, so a parameter tree does not depend on where a class lives.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, ClassVar, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from common import config_lib
from common.models.transformer import LearnedPositions
from common.models.transformer import PositionEncoding

NoPE = PositionEncoding


def relative(q_start, k_start, q_len, k_len):
  """(i, j, i - j) for one block; i - j is clipped at 0 (future keys are masked anyway)."""
  i = q_start + jnp.arange(q_len)[:, None]
  j = k_start + jnp.arange(k_len)[None, :]
  return i, j, jnp.maximum(i - j, 0)


# ---------------------------------------------------------------------------------------------
# Absolute encodings (added to the token embeddings once).
# ---------------------------------------------------------------------------------------------
def sinusoid(positions, dim: int, base: float = 10_000.0):
  half = dim // 2
  freqs = base ** (-jnp.arange(half) / half)
  angles = positions[:, None].astype(jnp.float32) * freqs[None, :]
  out = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
  return jnp.pad(out, ((0, 0), (0, dim - 2 * half)))


class Sinusoidal(PositionEncoding):
  """The original Transformer's fixed sin/cos embedding."""
  ABSOLUTE: ClassVar[bool] = True

  def embed(self, x, positions):
    return x + sinusoid(positions, x.shape[-1]).astype(x.dtype)[None]


# ---------------------------------------------------------------------------------------------
# Rotary.
# ---------------------------------------------------------------------------------------------
class RoPE(PositionEncoding):
  """Rotary embedding; `interpolate` rescales positions by train_length / L beyond train_length
  (position interpolation, Chen et al. 2023), for evaluation past the training length."""
  base: float = 10_000.0
  train_length: int | None = None
  interpolate: bool = False

  def rotate(self, q, k, positions):
    length, dim = q.shape[1], q.shape[-1]
    pos = positions.astype(jnp.float32)
    if self.interpolate and self.train_length and length > self.train_length:
      pos = pos * (self.train_length / length)
    half = dim // 2
    freqs = self.base ** (-jnp.arange(half) / half)
    angles = pos[:, None] * freqs[None, :]                      # (L, D/2)
    cos, sin = jnp.cos(angles)[None, :, None, :], jnp.sin(angles)[None, :, None, :]

    def apply(x):
      x1, x2 = x[..., :half], x[..., half:2 * half]
      rotated = jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)
      return jnp.concatenate([rotated, x[..., 2 * half:]], axis=-1).astype(x.dtype)

    return apply(q), apply(k)


# ---------------------------------------------------------------------------------------------
# Additive relative biases.
# ---------------------------------------------------------------------------------------------
def alibi_slopes(num_heads: int) -> jnp.ndarray:
  """The geometric slopes 2^(-8 h / H), h = 1 .. H."""
  return 2.0 ** (-8.0 * jnp.arange(1, num_heads + 1) / num_heads)


def _alibi_bias(params, q_start, k_start, q_len, k_len):
  _, _, rel = relative(q_start, k_start, q_len, k_len)
  return -params['slopes'][:, None, None] * rel.astype(jnp.float32)[None]


class ALiBi(PositionEncoding):
  """b_h(i, j) = -m_h (i - j) with fixed geometric slopes m_h."""
  num_heads: int = 4

  def bias(self, length):
    del length
    return _alibi_bias, {'slopes': alibi_slopes(self.num_heads)}


def _kerple_bias(params, q_start, k_start, q_len, k_len, *, kind):
  _, _, rel = relative(q_start, k_start, q_len, k_len)
  rel = rel.astype(jnp.float32)[None]
  r1 = jax.nn.softplus(params['r1'])[:, None, None]
  if kind == 'log':
    r2 = jax.nn.softplus(params['r2'])[:, None, None]
    return -r1 * jnp.log1p(r2 * rel)
  r2 = 2.0 * jax.nn.sigmoid(params['r2'])[:, None, None]   # power in (0, 2)
  return -r1 * jnp.where(rel > 0, jnp.exp(r2 * jnp.log(jnp.maximum(rel, 1.0))), 0.0)


class Kerple(PositionEncoding):
  """Kerple (Chi et al., 2022): 'log' -r1 log(1 + r2 (i - j)), or 'power' -r1 (i - j)^r2,
  r1, r2 > 0 learnable per head (r2 < 2 for the power kernel)."""
  num_heads: int = 4
  kind: str = 'log'

  def setup(self):
    if self.kind not in ('log', 'power'):
      raise config_lib.ConfigError(f"Kerple kind must be 'log' or 'power', got {self.kind!r}.")
    inv_softplus_1 = math.log(math.e - 1.0)   # softplus(x) = 1
    self.r1 = self.param('r1', nn.initializers.constant(inv_softplus_1), (self.num_heads,))
    self.r2 = self.param('r2', nn.initializers.constant(inv_softplus_1 if self.kind == 'log'
                                                        else 0.0), (self.num_heads,))

  def bias(self, length):
    del length
    return functools.partial(_kerple_bias, kind=self.kind), {'r1': self.r1, 'r2': self.r2}


def t5_bucket(rel, num_buckets: int = 32, max_distance: int = 128):
  """T5's causal relative-position bucket of i - j >= 0: exact below num_buckets / 2, then
  logarithmic up to max_distance, then the last bucket."""
  exact = num_buckets // 2
  rel = jnp.maximum(rel, 0)
  log_bucket = exact + (jnp.log(jnp.maximum(rel, 1).astype(jnp.float32) / exact)
                        / math.log(max_distance / exact) * (num_buckets - exact)).astype(jnp.int32)
  return jnp.where(rel < exact, rel, jnp.minimum(log_bucket, num_buckets - 1))


def _t5_bias(params, q_start, k_start, q_len, k_len, *, num_buckets, max_distance):
  _, _, rel = relative(q_start, k_start, q_len, k_len)
  return params['table'][:, t5_bucket(rel, num_buckets, max_distance)]


class T5Bias(PositionEncoding):
  """T5's relative bias: a learned scalar per head and log-spaced distance bucket."""
  num_heads: int = 4
  num_buckets: int = 32
  max_distance: int = 128

  def setup(self):
    self.table = self.param('table', nn.initializers.zeros_init(),
                            (self.num_heads, self.num_buckets))

  def bias(self, length):
    del length
    return (functools.partial(_t5_bias, num_buckets=self.num_buckets,
                              max_distance=self.max_distance), {'table': self.table})


# ---------------------------------------------------------------------------------------------
# By name.
# ---------------------------------------------------------------------------------------------
# A builder maps (num_heads, train_length, max_len, **options) to (encoding class or partial, or
# None for NoPE; whether one encoding is shared by every layer).
Builder = Callable[..., tuple[Callable[..., PositionEncoding] | None, bool]]
_REGISTRY: dict[str, tuple[Builder, tuple[str, ...]]] = {}


def register(name: str, builder: Builder, options: Sequence[str] = ()) -> None:
  """Makes `build(name, ...)` call `builder(num_heads=, train_length=, max_len=, **options)`;
  `options` names the keyword options it takes (any other is refused by `build`)."""
  _REGISTRY[name] = (builder, tuple(options))


def names() -> tuple[str, ...]:
  """Every registered encoding name (FIRE's once fire_pe.encodings is imported)."""
  return tuple(_REGISTRY)


def _standard(factory) -> Builder:
  def builder(*, num_heads, train_length, max_len):
    return factory(num_heads, train_length, max_len), False
  return builder


_partial = functools.partial
for _name, _factory in {
    'nope': lambda h, t, m: None,
    'learned_absolute': lambda h, t, m: _partial(LearnedPositions, max_len=m or t),
    'sinusoidal': lambda h, t, m: Sinusoidal,
    'rope': lambda h, t, m: _partial(RoPE, train_length=t),
    'rope_pi': lambda h, t, m: _partial(RoPE, train_length=t, interpolate=True),
    'alibi': lambda h, t, m: _partial(ALiBi, num_heads=h),
    'kerple_log': lambda h, t, m: _partial(Kerple, num_heads=h, kind='log'),
    'kerple_power': lambda h, t, m: _partial(Kerple, num_heads=h, kind='power'),
    't5': lambda h, t, m: _partial(T5Bias, num_heads=h),
}.items():
  register(_name, _standard(_factory))
del _name, _factory


def build(name: str, *, num_heads: int, train_length: int, max_len: int | None = None,
          **options: Any) -> dict[str, Any]:
  """The TransformerLM fields (`encoding`, `share_encoding`) for a registered encoding name.

  Args:
    name: one of `names()`.
    num_heads: the model's heads (a bias's H); TransformerLM refuses a bias for other heads.
    train_length: the training sequence length (RoPE's interpolation; FIRE's default threshold).
    max_len: the learned absolute table's size (default: train_length).
    **options: options the encoding's builder declares (e.g. FIRE's `fire={...}`).
  """
  if isinstance(num_heads, bool) or int(num_heads) != num_heads or num_heads < 1:
    raise config_lib.ConfigError(f"num_heads must be a positive integer (the model's heads), "
                                 f'got {num_heads!r}.')
  if isinstance(train_length, bool) or int(train_length) != train_length or train_length < 1:
    raise config_lib.ConfigError(f'train_length must be a positive integer, got '
                                 f'{train_length!r}.')
  if name not in _REGISTRY:
    hint = ('' if name in names() or not name.startswith('fire') else
            ' (FIRE and its ablations are registered by importing fire_pe.encodings)')
    raise config_lib.ConfigError(f'Unknown position encoding {name!r}'
                                 f'{config_lib.closest(name, names())}{hint}; available: '
                                 f'{list(names())}.')
  builder, accepted = _REGISTRY[name]
  unknown = sorted(set(options) - set(accepted))
  if unknown:
    raise config_lib.ConfigError(f'Position encoding {name!r} takes no option(s) {unknown}; it '
                                 f'takes {list(accepted) or "none"}.')
  encoding, shared = builder(num_heads=num_heads, train_length=train_length, max_len=max_len,
                             **options)
  return {'encoding': encoding, 'share_encoding': shared}

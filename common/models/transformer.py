"""A decoder-only Transformer language model (pre-norm, causal attention, MLP) with pluggable
position encodings.

A position encoding is a `PositionEncoding` module; the model calls at most three hooks, each a
no-op by default, so NoPE is the base class itself:

    x = enc.embed(x, positions)                  # absolute encodings: once, on token embeddings
    q, k = enc.rotate(q, k, positions)           # rotary encodings: in every layer
    bias_fn, params = enc.bias(length)           # additive attention bias (or None), see
                                                 # common.models.attention for bias_fn's contract

Shapes: x (B, L, D), positions (L,), q and k (B, L, H, D / H); a bias is (H, q_len, k_len) with H
the model's num_heads (checked at the first call, naming both counts). Broadcast explicitly (a
per-position table is added as `table[None]`): tests run with jax_numpy_rank_promotion='raise'.

`ABSOLUTE` encodings are built once at the input. The others are built per layer (each layer its
own parameters) or, with `share_encoding=True`, once for the whole model: their `bias(length)` is
then called once per forward pass and its result reused by every layer. `max_length` (None: any)
is the longest sequence the encoding can represent; longer inputs are refused with a clear error.

    model = TransformerLM(vocab_size=259, num_layers=2, d_model=64, num_heads=4,
                          encoding=functools.partial(MyEncoding, num_heads=4))
    logits = model.apply(variables, tokens)      # (B, L) int -> (B, L, vocab) float32

Special tokens: `num_special_tokens=n` adds ids vocab_size .. vocab_size + n - 1 (e.g. a <pause>
token beside the byte vocabulary) with their own embedding table ('special_embed'); the readout
stays over the vocab_size ordinary tokens, so a special token is never predicted.

Bidirectional: `causal=False` drops the causal mask (every position attends to every other).
`MaskedTokenTransformer` is that model with learned positions (`LearnedPositions`) and a
class-conditioning token at position 0, the MaskGIT/Muse backbone (muse_mrf builds on it).

Decoding with a KV cache (common.models.decoding drives it): with `cache=` the model returns
`(logits, new_cache)`. Without `cache_index` the tokens (B, L) are a prefill at positions 0 .. L-1
(the same computation as the plain call, keys and values also written to cache slots 0 .. L-1);
with `cache_index` (B,) the tokens are one new token per row, (B, 1), at position cache_index[b]
(its own per row), attending to the cache slots <= that position. In a step the hooks see the
batch as the length axis (`embed` and `rotate` get positions (B,) for inputs (1, B, ...)) and
`bias(K)` is asked for the cache length K: every encoding that is a function of positions (all
of fire_pe's) then gives what the full forward pass gives. RoPE with position interpolation
rescales by the whole length, which a cache cannot follow: it is exact within its train_length.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from common.models import attention as attention_lib
from common.models import layers


# Activations are laid out by logical axes too (nn.with_logical_constraint, mapped to mesh axes by
# the rules common.train activates), so tensor-parallel layouts do not rest on XLA's guesses:
# (batch, length, embed) between blocks; heads and mlp split where the parameters are.
ACTIVATION_AXES = ('batch', 'length', 'embed')


class SequenceTooLongError(ValueError):
  """An input longer than the position encoding can represent."""


def check_bias_heads(bias: tuple[attention_lib.BiasFn, Any] | None, num_heads: int,
                     encoding: PositionEncoding | None) -> None:
  """Raises ValueError unless the bias has one row of scores per head of the model.

  An encoding built for other heads (e.g. FIRE(num_heads=4) in a 2-head model) would otherwise
  fail inside attention with a broadcasting TypeError that names neither count. Evaluated on
  shapes only (one query, one key), so it costs no computation.
  """
  if bias is None:
    return
  bias_fn, params = bias
  shape = jax.eval_shape(lambda p: bias_fn(p, 0, 0, 1, 1), params).shape
  if shape != (num_heads, 1, 1):
    name = type(encoding).__name__ if encoding is not None else 'The position encoding'
    raise ValueError(f'{name} gives an attention bias for {shape[0] if shape else "no"} heads '
                     f'(shape {shape} for one query and key, expected ({num_heads}, 1, 1)), but '
                     f'the model has num_heads={num_heads}: build the encoding with '
                     f'num_heads={num_heads}.')


def check_token_ids(tokens, vocab_size: int) -> None:
  """Raises ValueError for token ids outside [0, vocab_size) when `tokens` is concrete.

  nn.Embed reads such ids as NaN rows (jnp.take's fill mode), so the logits turn NaN without an
  error. Under jit (or grad of a traced input) `tokens` is a tracer and there is no cheap check:
  validate ids in the input pipeline; eager calls and `init` on real data are checked here.
  """
  if isinstance(tokens, jax.core.Tracer) or tokens.size == 0:
    return
  if isinstance(tokens, jax.Array) and not tokens.is_fully_addressable:
    return  # spread over processes: this one cannot read every id
  # numpy, not jnp: a concrete array closed over by a jitted function (a constant) is read here
  # while jax traces, where a jnp.min would be a tracer.
  ids = np.asarray(tokens)
  lo, hi = int(ids.min()), int(ids.max())
  if lo < 0 or hi >= vocab_size:
    where = tuple(int(i) for i in np.argwhere((ids < 0) | (ids >= vocab_size))[0])
    raise ValueError(f'Token id {int(ids[where])} at index {where} is outside [0, {vocab_size}) '
                     f'(vocab_size={vocab_size}; ids seen range over [{lo}, {hi}]): the '
                     'embedding would give NaN logits.')


class PositionEncoding(nn.Module):
  """No position information (NoPE); subclasses override the hooks they need."""
  ABSOLUTE: ClassVar[bool] = False

  @property
  def max_length(self) -> int | None:
    return None

  def embed(self, x, positions):
    del positions
    return x

  def rotate(self, q, k, positions):
    del positions
    return q, k

  def bias(self, length: int) -> tuple[attention_lib.BiasFn, Any] | None:
    del length
    return None


class Projection(nn.Module):
  """A bias-free projection whose kernel keeps its logical shape, e.g. (embed, heads, kv).

  (flax's DenseGeneral initialises a flattened kernel and reshapes it, which fails once logical
  axis rules are active: the partitioning names fit the unflattened shape only.) The init is
  LeCun normal over the contracted axes `in_axes`, as DenseGeneral's.
  """
  shape: tuple[int, ...]
  axes: tuple[str, ...]
  equation: str
  in_axes: tuple[int, ...] = (0,)
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    out_axes = tuple(i for i in range(len(self.shape)) if i not in self.in_axes)
    init = nn.initializers.lecun_normal(in_axis=self.in_axes, out_axis=out_axes)
    kernel = self.param('kernel', nn.with_logical_partitioning(init, self.axes), self.shape)
    return jnp.einsum(self.equation, x.astype(self.dtype), kernel.astype(self.dtype))


def _step_rotate(encoding: PositionEncoding, q, k, positions):
  """rotate() for one new token per row at positions (B,): the batch taken as the length axis."""
  q, k = encoding.rotate(q.swapaxes(0, 1), k.swapaxes(0, 1), positions)
  return q.swapaxes(0, 1), k.swapaxes(0, 1)


class CausalSelfAttention(nn.Module):
  num_heads: int
  head_dim: int
  implementation: str = 'naive'   # 'naive' | 'blockwise'
  block_size: int = 512
  dtype: jnp.dtype = jnp.float32
  causal: bool = True             # False: every position attends to every other (masked models)

  @nn.compact
  def __call__(self, x, positions, encoding: PositionEncoding | None, bias, cache=None,
               cache_index=None):
    shape = (x.shape[-1], self.num_heads, self.head_dim)
    project = lambda name: Projection(shape, ('embed', 'heads', 'kv'), 'bld,dhk->blhk',
                                      dtype=self.dtype, name=name)(x)
    qkv_axes = ('batch', 'length', 'heads', 'kv')
    q = nn.with_logical_constraint(project('query'), qkv_axes)
    k = nn.with_logical_constraint(project('key'), qkv_axes)
    v = nn.with_logical_constraint(project('value'), qkv_axes)
    out_proj = Projection((self.num_heads, self.head_dim, x.shape[-1]), ('heads', 'kv', 'embed'),
                          'blhk,hkd->bld', in_axes=(0, 1), dtype=self.dtype, name='out')
    check_bias_heads(bias, self.num_heads, encoding)
    bias_fn, bias_params = bias if bias is not None else (None, None)
    if cache is not None and cache_index is not None:  # one new token per row
      if encoding is not None:
        q, k = _step_rotate(encoding, q, k, positions)
      write = jax.vmap(lambda c, new, i: jax.lax.dynamic_update_slice_in_dim(c, new, i, axis=0))
      keys = write(cache['key'], k.astype(cache['key'].dtype), cache_index)
      values = write(cache['value'], v.astype(cache['value'].dtype), cache_index)
      out = attention_lib.cached_attention(q, keys, values, cache_index, bias_fn, bias_params)
      return out_proj(out), {'key': keys, 'value': values}
    if encoding is not None:
      q, k = encoding.rotate(q, k, positions)
    if self.implementation == 'naive':
      out = attention_lib.naive_attention(q, k, v, bias_fn, bias_params, causal=self.causal)
    elif self.implementation == 'blockwise':
      out = attention_lib.blockwise_attention(q, k, v, bias_fn, bias_params, causal=self.causal,
                                              q_block=self.block_size, k_block=self.block_size)
    else:
      raise ValueError(f'Unknown attention implementation {self.implementation!r}; use naive '
                       'or blockwise.')
    out = out_proj(nn.with_logical_constraint(out, qkv_axes))
    if cache is None:
      return out
    # Prefill: the prompt's keys and values go to slots 0 .. L-1.
    put = lambda c, new: jax.lax.dynamic_update_slice_in_dim(c, new.astype(c.dtype), 0, axis=1)
    return out, {'key': put(cache['key'], k), 'value': put(cache['value'], v)}


def _layer_norm(name):
  return nn.LayerNorm(name=name, scale_init=nn.with_logical_partitioning(
      nn.initializers.ones_init(), ('embed',)), bias_init=nn.with_logical_partitioning(
          nn.initializers.zeros_init(), ('embed',)))


class DecoderBlock(nn.Module):
  num_heads: int
  mlp_dim: int
  encoding: Callable[..., PositionEncoding] | None = None  # per-layer encoding (None: shared/none)
  implementation: str = 'naive'
  block_size: int = 512
  dtype: jnp.dtype = jnp.float32
  causal: bool = True

  @nn.compact
  def __call__(self, x, positions, shared: PositionEncoding | None, shared_bias, cache=None,
               cache_index=None):
    encoding, bias = shared, shared_bias
    if self.encoding is not None:
      encoding = self.encoding(name='position')
      # A decoding step's query sees every cache slot: the bias is asked for the cache length.
      step = cache is not None and cache_index is not None
      bias = encoding.bias(cache['key'].shape[1] if step else x.shape[1])
    d_model = x.shape[-1]
    h = _layer_norm('attention_norm')(x)
    attended = CausalSelfAttention(self.num_heads, d_model // self.num_heads, self.implementation,
                                   self.block_size, self.dtype, self.causal, name='attention')(
                                       h, positions, encoding, bias, cache, cache_index)
    new_cache = None
    if cache is not None:
      attended, new_cache = attended
    x = x + attended
    h = _layer_norm('mlp_norm')(x)
    h = layers.dense(self.mlp_dim, ('embed', 'mlp'), dtype=self.dtype, name='mlp_in')(h)
    h = nn.with_logical_constraint(h, ('batch', 'length', 'mlp'))
    h = layers.dense(d_model, ('mlp', 'embed'), dtype=self.dtype, name='mlp_out')(nn.gelu(h))
    x = nn.with_logical_constraint(x + h, ACTIVATION_AXES)
    return x if cache is None else (x, new_cache)


class TransformerLM(nn.Module):
  """Token ids (B, L) -> next-token logits (B, L, vocab_size).

  Ids must be in [0, vocab_size): outside it the embedding gives NaN. Concrete ids (eager calls,
  `init`) are checked, with a ValueError naming the id; traced ids (under jit) cannot be checked
  cheaply, so a jitted caller should validate its data (see `check_token_ids`).

  Attributes:
    vocab_size, num_layers, d_model, num_heads, mlp_dim (default 4 d_model): sizes.
    encoding: a PositionEncoding class or partial (None: NoPE); see the module docstring.
    share_encoding: one relative encoding for all layers, its bias computed once per forward pass.
    attention: 'naive' (whole L x L scores) or 'blockwise' (common.models.attention).
    block_size: query and key block of the block-wise attention.
    num_special_tokens: extra ids vocab_size .. vocab_size + n - 1 with their own embeddings,
      never predicted (the logits stay (B, L, vocab_size)).
    causal: True (the default, the LM): position i attends to 0 .. i. False: bidirectional
      attention (a masked-token model, see MaskedTokenTransformer); no KV-cache decoding then.

  `__call__(tokens, cache=..., cache_index=...)` decodes with a KV cache (module docstring;
  common.models.decoding.init_cache makes one).
  """
  vocab_size: int
  num_layers: int = 2
  d_model: int = 64
  num_heads: int = 4
  mlp_dim: int | None = None
  encoding: Callable[..., PositionEncoding] | None = None
  share_encoding: bool = False
  attention: str = 'naive'
  block_size: int = 512
  dtype: jnp.dtype = jnp.float32
  num_special_tokens: int = 0
  causal: bool = True

  def _embed_tokens(self, tokens):
    embed = nn.Embed(self.vocab_size, self.d_model, name='embed', embedding_init=(
        nn.with_logical_partitioning(nn.initializers.normal(1.0), ('vocab', 'embed'))))
    if not self.num_special_tokens:
      return embed(tokens)
    special = self.param('special_embed', nn.with_logical_partitioning(
        nn.initializers.normal(1.0), (None, 'embed')), (self.num_special_tokens, self.d_model))
    is_special = tokens >= self.vocab_size
    regular = embed(jnp.where(is_special, 0, tokens))
    # An id past the special tokens (possible only under jit, where ids are not checked) reads
    # NaN, never the nearest special token's embedding (id 261 with one special token was read
    # as <pause>).
    extra = jnp.take(special, jnp.where(is_special, tokens - self.vocab_size, 0), axis=0,
                     mode='fill', fill_value=jnp.nan).astype(regular.dtype)
    return jnp.where(is_special[..., None], extra, regular)

  @nn.compact
  def __call__(self, tokens, *, train: bool = False, cache=None, cache_index=None):
    del train
    if self.d_model % self.num_heads:
      raise ValueError(f'd_model={self.d_model} is not divisible by num_heads={self.num_heads}.')
    if tokens.ndim != 2:
      raise ValueError(f'TransformerLM expects token ids of shape (batch, length), got shape '
                       f'{tokens.shape}.')
    if isinstance(self.num_special_tokens, bool) or self.num_special_tokens < 0:
      raise ValueError(f'num_special_tokens={self.num_special_tokens!r}: expected a whole number '
                       '>= 0.')
    check_token_ids(tokens, self.vocab_size + self.num_special_tokens)
    if cache is not None and not self.causal:
      raise ValueError('KV-cache decoding needs causal attention; this model has causal=False '
                       '(a bidirectional model reads the whole sequence in one call).')
    step = cache is not None and cache_index is not None
    if step and tokens.shape[1] != 1:
      raise ValueError(f'A decoding step takes one token per row, shape (batch, 1); got '
                       f'{tokens.shape} (prefill the prompt without cache_index).')
    if cache is not None and tokens.shape[1] > cache['layer_0']['key'].shape[1]:
      raise ValueError(f'{tokens.shape[1]} tokens do not fit the cache of '
                       f'{cache["layer_0"]["key"].shape[1]} slots.')
    # In a step the batch stands in for the length axis of the hooks (one position per row).
    length = cache['layer_0']['key'].shape[1] if step else tokens.shape[1]
    positions = cache_index if step else jnp.arange(length)
    x = nn.with_logical_constraint(self._embed_tokens(tokens).astype(self.dtype), ACTIVATION_AXES)
    encoding_cls = self.encoding or PositionEncoding
    absolute = getattr(encoding_cls, 'ABSOLUTE', None)
    if absolute is None:  # a functools.partial
      absolute = getattr(getattr(encoding_cls, 'func', None), 'ABSOLUTE', False)
    shared, shared_bias, per_layer = None, None, None
    if absolute or self.share_encoding:
      shared = encoding_cls(name='position')
      if shared.max_length is not None and length > shared.max_length:
        raise SequenceTooLongError(
            f'Sequence length {length} exceeds the {shared.max_length} positions that '
            f'{type(shared).__name__} can represent.')
      if step:
        x = shared.embed(x.swapaxes(0, 1), positions).swapaxes(0, 1)
      else:
        x = shared.embed(x, positions)
      shared_bias = shared.bias(length)
    else:
      per_layer = encoding_cls
    new_cache = {}
    for i in range(self.num_layers):
      name = f'layer_{i}'
      x = DecoderBlock(self.num_heads, self.mlp_dim or 4 * self.d_model, per_layer,
                       self.attention, self.block_size, self.dtype, self.causal, name=name)(
                           x, positions, shared, shared_bias,
                           *((cache[name], cache_index) if cache is not None else ()))
      if cache is not None:
        x, new_cache[name] = x
    x = _layer_norm('final_norm')(x)
    logits = layers.dense(self.vocab_size, ('embed', 'vocab'), use_bias=False, dtype=self.dtype,
                          name='readout')(x).astype(jnp.float32)
    logits = nn.with_logical_constraint(logits, ('batch', 'length', 'vocab'))
    return logits if cache is None else (logits, new_cache)


class LearnedPositions(PositionEncoding):
  """A learned embedding per position 0 .. max_len - 1, added once at the input (ABSOLUTE).

  A bidirectional model needs one: without a causal mask, attention alone cannot tell positions
  apart (NoPE is permutation-equivariant there).
  """
  ABSOLUTE: ClassVar[bool] = True
  max_len: int = 512

  @property
  def max_length(self) -> int:
    return self.max_len

  @nn.compact
  def embed(self, x, positions):
    table = self.param('table', nn.with_logical_partitioning(
        nn.initializers.normal(0.02), (None, 'embed')), (self.max_len, x.shape[-1]))
    return x + table[positions].astype(x.dtype)[None]


class MaskedTokenTransformer(nn.Module):
  """A bidirectional masked-token model (MaskGIT, Muse): the same TransformerLM with causal=False,
  learned positions and a class-conditioning token.

  Ids (MaskGIT's layout): image tokens 0 .. codebook_size - 1; class c is codebook_size + c; the
  mask token is the last id, codebook_size + num_classes (`mask_id`). Class and mask ids are the
  LM's special tokens (their own embeddings), so the readout is over the codebook only: a class
  or mask id is never predicted.

      model = MaskedTokenTransformer(codebook_size=8, num_classes=10, num_tokens=64)
      logits = model.apply(variables, tokens, labels)   # (B, 64) ids, (B,) -> (B, 64, 8)

  With num_classes=0 there is no class token (unconditional) and `labels` must be None.
  Tokens must be codebook ids or `mask_id`; concrete inputs are checked (ValueError); under jit a
  label outside [0, num_classes) gives its row NaN logits.
  """
  codebook_size: int
  num_classes: int = 0
  num_tokens: int = 256        # image tokens per example (e.g. 16 x 16)
  num_layers: int = 2
  d_model: int = 64
  num_heads: int = 4
  mlp_dim: int | None = None
  attention: str = 'naive'
  block_size: int = 512
  dtype: jnp.dtype = jnp.float32

  @property
  def mask_id(self) -> int:
    return self.codebook_size + self.num_classes

  def class_id(self, labels):
    return self.codebook_size + labels

  @nn.compact
  def __call__(self, tokens, labels=None, *, train: bool = False):
    if tokens.ndim != 2 or tokens.shape[1] != self.num_tokens:
      raise ValueError(f'MaskedTokenTransformer expects tokens of shape (batch, {self.num_tokens})'
                       f', got {tokens.shape}.')
    if self.num_classes and labels is None:
      raise ValueError(f'This model is class-conditional ({self.num_classes} classes): pass '
                       'labels (batch,).')
    if not self.num_classes and labels is not None:
      raise ValueError('This model is unconditional (num_classes=0): pass labels=None.')
    if not isinstance(tokens, jax.core.Tracer) and tokens.size:
      ids = np.asarray(tokens)
      bad = (ids < 0) | ((ids >= self.codebook_size) & (ids != self.mask_id))
      if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f'Token id {int(ids[where])} at index {where} is neither a codebook id '
                         f'in [0, {self.codebook_size}) nor the mask id {self.mask_id}.')
    if labels is not None:
      if labels.shape != tokens.shape[:1]:
        raise ValueError(f'labels must have shape ({tokens.shape[0]},), got {labels.shape}.')
      if not isinstance(labels, jax.core.Tracer) and labels.size:
        lab = np.asarray(labels)
        if lab.min() < 0 or lab.max() >= self.num_classes:
          raise ValueError(f'Class labels must lie in [0, {self.num_classes}); got '
                           f'[{int(lab.min())}, {int(lab.max())}].')
      tokens = jnp.concatenate([self.class_id(labels)[:, None].astype(tokens.dtype), tokens], 1)
    length = tokens.shape[1]
    lm = TransformerLM(
        vocab_size=self.codebook_size, num_special_tokens=self.num_classes + 1,
        num_layers=self.num_layers, d_model=self.d_model, num_heads=self.num_heads,
        mlp_dim=self.mlp_dim, attention=self.attention, block_size=self.block_size,
        dtype=self.dtype, causal=False,
        encoding=functools.partial(LearnedPositions, max_len=length), name='transformer')
    logits = lm(tokens, train=train)
    if labels is None:
      return logits
    # A traced label outside the classes would read another special token's embedding (the mask
    # token's, for label = num_classes): its row's logits are NaN instead, which a loss carries
    # to the training loop's NaN guard, never a silently wrong prediction.
    valid = (labels >= 0) & (labels < self.num_classes)
    return jnp.where(valid[:, None, None], logits[:, 1:], jnp.nan)

"""Causal self-attention with an additive position bias: naive, or block-wise (online softmax).

A bias is given as a pure function and its parameters (a pytree):

    bias_fn(params, q_start, k_start, q_len, k_len) -> (H, q_len, k_len) float32

the bias for queries at positions q_start + arange(q_len) and keys at k_start + arange(k_len) (q_len
and k_len static; the starts may be traced). `naive_attention` calls it once for the whole L x L
grid. `blockwise_attention` calls it per (query block, key block) inside the loops, with an online
softmax (running max and normaliser) and a custom VJP that recomputes scores and bias block by block
in the backward pass (one pass over key blocks, dq accumulated whole), so no H x L x L score,
probability or bias tensor is ever held: the memory is O(B H L D + B H q_block k_block). Key blocks
entirely in a query block's future are skipped. Gradients reach the bias parameters through
`jax.vjp` of bias_fn on each block.

`cached_attention` is a decoding step's: one query per row, at its own position, against a KV cache
(common.models.decoding); the bias is evaluated for that position's row only.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp

BiasFn = Callable[[Any, Any, Any, int, int], jax.Array]
_NEG = -1e30  # a finite "minus infinity": exp(_NEG - m) is 0 and never NaN


def naive_attention(q, k, v, bias_fn: BiasFn | None = None, bias_params: Any = None, *,
                    causal: bool = True):
  """softmax(q k^T / sqrt(D) + bias, causal mask) v for q, k, v of shape (B, L, H, D).

  Through `jax.nn.dot_product_attention`, which takes the bias and the causal flag and picks the
  backend's kernel (cuDNN's fused attention on GPUs, XLA elsewhere); the whole L x L scores are
  formed (block-wise attention for long sequences).
  """
  bias = None
  if bias_fn is not None:
    bias = bias_fn(bias_params, 0, 0, q.shape[1], k.shape[1])[None].astype(q.dtype)  # (1, H, L, L)
  return jax.nn.dot_product_attention(q, k, v, bias=bias, is_causal=causal)


def _block_scores(qi, kj, q_start, k_start, bias, scale, causal, length):
  """Scaled scores of one block with bias, masked (causal, padding); and the mask."""
  s = jnp.einsum('bqhd,bkhd->bhqk', qi, kj, preferred_element_type=jnp.float32) * scale
  if bias is not None:
    s = s + bias[None]
  q_pos = q_start + jnp.arange(qi.shape[1])[:, None]
  k_pos = k_start + jnp.arange(kj.shape[1])[None, :]
  mask = k_pos < length
  if causal:
    mask = mask & (k_pos <= q_pos)
  return jnp.where(mask, s, _NEG), mask


def _num_key_blocks(q_start, q_block, k_block, num_k, causal):
  if not causal:
    return num_k
  return jnp.minimum(num_k, (q_start + q_block - 1) // k_block + 1)


def _materialised(bias):
  # The block's (H, q, k) bias (and, in the backward pass, its cotangent) is computed once into
  # memory and read by the (B, H, q, k) score fusions: without the barrier XLA fuses the bias's
  # producer (FIRE's gather and count over kinks) into those consumers and recomputes it for every
  # batch row. Measured (benchmarks.attention, B 8, 2 layers, threshold L / 4): FIRE's cost over
  # the bare kernel 1.35x -> 1.15x at L = 2048, 1.33x -> 1.25x at 512.
  return jax.lax.optimization_barrier(bias)


def _bias_block(bias_fn, params, q_start, k_start, q_block, k_block):
  if bias_fn is None:
    return None
  return _materialised(bias_fn(params, q_start, k_start, q_block, k_block))


def _forward(q, k, v, params, bias_fn, causal, q_block, k_block, length):
  batch, lq, heads, dim = q.shape
  num_q, num_k = lq // q_block, k.shape[1] // k_block
  scale = 1.0 / math.sqrt(dim)

  def one_query_block(i):
    q_start = i * q_block
    qi = jax.lax.dynamic_slice_in_dim(q, q_start, q_block, axis=1)

    def body(j, carry):
      m, l, acc = carry
      k_start = j * k_block
      kj = jax.lax.dynamic_slice_in_dim(k, k_start, k_block, axis=1)
      vj = jax.lax.dynamic_slice_in_dim(v, k_start, k_block, axis=1)
      bias = _bias_block(bias_fn, params, q_start, k_start, q_block, k_block)
      s, mask = _block_scores(qi, kj, q_start, k_start, bias, scale, causal, length)
      m_new = jnp.maximum(m, s.max(axis=-1))
      p = jnp.where(mask, jnp.exp(s - m_new[..., None]), 0.0)
      correction = jnp.exp(m - m_new)
      l = l * correction + p.sum(axis=-1)
      acc = acc * correction[..., None] + jnp.einsum('bhqk,bkhd->bhqd', p, vj.astype(jnp.float32))
      return m_new, l, acc

    init = (jnp.full((batch, heads, q_block), _NEG, jnp.float32),
            jnp.zeros((batch, heads, q_block), jnp.float32),
            jnp.zeros((batch, heads, q_block, dim), jnp.float32))
    m, l, acc = jax.lax.fori_loop(
        0, _num_key_blocks(q_start, q_block, k_block, num_k, causal), body, init)
    l = jnp.maximum(l, 1e-30)
    return acc / l[..., None], m + jnp.log(l)

  out, lse = jax.lax.map(one_query_block, jnp.arange(num_q))   # (nq, B, H, bq, D), (nq, B, H, bq)
  out = out.transpose(1, 0, 3, 2, 4).reshape(batch, lq, heads, dim)
  lse = lse.transpose(1, 2, 0, 3).reshape(batch, heads, lq)
  return out.astype(q.dtype), lse


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7, 8))
def _flash(q, k, v, params, bias_fn, causal, q_block, k_block, length):
  return _forward(q, k, v, params, bias_fn, causal, q_block, k_block, length)[0]


def _flash_fwd(q, k, v, params, bias_fn, causal, q_block, k_block, length):
  out, lse = _forward(q, k, v, params, bias_fn, causal, q_block, k_block, length)
  return out, (q, k, v, params, out, lse)


def _flash_bwd(bias_fn, causal, q_block, k_block, length, residuals, dout):
  q, k, v, params, out, lse = residuals
  batch, lq, heads, dim = q.shape
  num_q, num_k = lq // q_block, k.shape[1] // k_block
  scale = 1.0 / math.sqrt(dim)
  dout = dout.astype(jnp.float32)
  delta = jnp.einsum('bqhd,bqhd->bhq', dout, out.astype(jnp.float32))

  def probs(qi, kj, q_start, k_start, bias, lse_i):
    s, mask = _block_scores(qi, kj, q_start, k_start, bias, scale, causal, length)
    return jnp.where(mask, jnp.exp(s - lse_i[..., None]), 0.0)

  # One pass over key blocks (FlashAttention-2's order): each key block's dk and dv are summed
  # over the query blocks that see it, and each (query, key) block adds its share to dq, carried
  # whole. Scores and bias are recomputed once per block; the bias's VJP gives its parameters'
  # gradient.
  def key_block(j, carry):
    dq, dk_all, dv_all, dparams = carry
    k_start = j * k_block
    kj = jax.lax.dynamic_slice_in_dim(k, k_start, k_block, axis=1)
    vj = jax.lax.dynamic_slice_in_dim(v, k_start, k_block, axis=1).astype(jnp.float32)

    def query_block(i, inner):
      dq, dk, dv, dparams = inner
      q_start = i * q_block
      qi = jax.lax.dynamic_slice_in_dim(q, q_start, q_block, axis=1)
      doi = jax.lax.dynamic_slice_in_dim(dout, q_start, q_block, axis=1)
      lse_i = jax.lax.dynamic_slice_in_dim(lse, q_start, q_block, axis=2)
      delta_i = jax.lax.dynamic_slice_in_dim(delta, q_start, q_block, axis=2)
      if bias_fn is None:
        bias, pullback = None, None
      else:
        bias, pullback = jax.vjp(
            lambda prm: bias_fn(prm, q_start, k_start, q_block, k_block), params)
        bias = _materialised(bias)
      p = probs(qi, kj, q_start, k_start, bias, lse_i)
      dv = dv + jnp.einsum('bhqk,bqhd->bkhd', p, doi)
      dp = jnp.einsum('bqhd,bkhd->bhqk', doi, vj)
      ds = p * (dp - delta_i[..., None])
      dk = dk + jnp.einsum('bhqk,bqhd->bkhd', ds, qi.astype(jnp.float32)) * scale
      dq_i = jax.lax.dynamic_slice_in_dim(dq, q_start, q_block, axis=1)
      dq_i = dq_i + jnp.einsum('bhqk,bkhd->bqhd', ds, kj.astype(jnp.float32)) * scale
      dq = jax.lax.dynamic_update_slice_in_dim(dq, dq_i, q_start, axis=1)
      if pullback is not None:
        dparams = jax.tree.map(jnp.add, dparams, pullback(_materialised(ds.sum(axis=0)))[0])
      return dq, dk, dv, dparams

    first = (k_start // q_block) if causal else 0  # query blocks wholly before this key block
    zeros = jnp.zeros((batch, k_block, heads, dim), jnp.float32)
    dq, dk, dv, dparams = jax.lax.fori_loop(first, num_q, query_block,
                                            (dq, zeros, zeros, dparams))
    dk_all = jax.lax.dynamic_update_slice_in_dim(dk_all, dk, k_start, axis=1)
    dv_all = jax.lax.dynamic_update_slice_in_dim(dv_all, dv, k_start, axis=1)
    return dq, dk_all, dv_all, dparams

  full = jnp.zeros((batch, k.shape[1], heads, dim), jnp.float32)
  init = (jnp.zeros((batch, lq, heads, dim), jnp.float32), full, full,
          jax.tree.map(jnp.zeros_like, params))
  dq, dk, dv, dparams = jax.lax.fori_loop(0, num_k, key_block, init)
  return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), dparams


_flash.defvjp(_flash_fwd, _flash_bwd)


def blockwise_attention(q, k, v, bias_fn: BiasFn | None = None, bias_params: Any = None, *,
                        causal: bool = True, q_block: int = 512, k_block: int = 512):
  """Same values and gradients as `naive_attention`, without any L x L tensor in memory.

  q, k, v: (B, L, H, D) with the same L. The length is padded up to a multiple of the blocks
  (padded keys are masked, padded queries dropped); blocks larger than L shrink to L.
  """
  if not q.shape == k.shape == v.shape:
    raise ValueError(f'blockwise_attention needs q, k, v of one shape (B, L, H, D); got '
                     f'{q.shape}, {k.shape}, {v.shape}.')
  length = q.shape[1]
  q_block, k_block = min(q_block, length), min(k_block, length)
  padded = -(-length // math.lcm(q_block, k_block)) * math.lcm(q_block, k_block)
  if padded != length:
    pad = ((0, 0), (0, padded - length), (0, 0), (0, 0))
    q, k, v = jnp.pad(q, pad), jnp.pad(k, pad), jnp.pad(v, pad)
  params = () if bias_params is None else bias_params
  out = _flash(q, k, v, params, bias_fn, causal, q_block, k_block, length)
  return out[:, :length]


def cached_attention(q, k, v, positions, bias_fn: BiasFn | None = None, bias_params: Any = None):
  """One query per row against a KV cache: q (B, 1, H, D) at positions (B,), each row its own;
  k, v (B, K, H, D), the cache. Row b sees the slots 0 .. positions[b] (later slots hold nothing
  of its sequence yet). The bias is bias_fn's row for query position positions[b] and keys
  0 .. K-1, evaluated per row (positions traced), so a decoding step gets what the full forward
  pass gets at that position.
  """
  num_slots = k.shape[1]
  bias = None
  if bias_fn is not None:
    bias = jax.vmap(lambda p: bias_fn(bias_params, p, 0, q.shape[1], num_slots))(positions)
    bias = bias.astype(q.dtype)                                           # (B, H, 1, K)
  visible = jnp.arange(num_slots)[None, :] <= positions[:, None]           # (B, K)
  return jax.nn.dot_product_attention(q, k, v, bias=bias, mask=visible[:, None, None, :])

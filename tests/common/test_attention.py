"""Block-wise attention against the naive one (values, gradients incl. bias parameters), its
memory, and the TransformerLM around it."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common.models import attention
from common.models import transformer


def _bias_fn(params, q_start, k_start, q_len, k_len):
  i = q_start + jnp.arange(q_len)[:, None]
  j = k_start + jnp.arange(k_len)[None, :]
  rel = (i - j).astype(jnp.float32)
  return (-params['slope'][:, None, None] * jnp.abs(rel)[None]
          + params['w'][:, None, None] * jnp.sin(rel / 7.0 + i / 5.0)[None])  # depends on i too


def _qkv(seed, b=2, length=37, h=3, d=8):
  rng = np.random.default_rng(seed)
  return [jnp.asarray(rng.normal(size=(b, length, h, d)).astype(np.float32)) for _ in range(3)]


@pytest.mark.parametrize('causal', [True, False])
@pytest.mark.parametrize('q_block,k_block', [(8, 8), (16, 8), (8, 16), (5, 10), (64, 64)])
def test_blockwise_matches_naive_values_and_gradients(causal, q_block, k_block):
  q, k, v = _qkv(0)
  params = {'slope': jnp.array([0.1, 0.5, 1.0]), 'w': jnp.array([0.3, -0.2, 1.0])}
  cot = jnp.asarray(np.random.default_rng(1).normal(size=q.shape).astype(np.float32))
  naive = lambda q, k, v, p: jnp.sum(attention.naive_attention(q, k, v, _bias_fn, p,
                                                               causal=causal) * cot)
  block = lambda q, k, v, p: jnp.sum(attention.blockwise_attention(
      q, k, v, _bias_fn, p, causal=causal, q_block=q_block, k_block=k_block) * cot)
  np.testing.assert_allclose(
      attention.blockwise_attention(q, k, v, _bias_fn, params, causal=causal, q_block=q_block,
                                    k_block=k_block),
      attention.naive_attention(q, k, v, _bias_fn, params, causal=causal), rtol=1e-5, atol=1e-6)
  gn = jax.grad(naive, argnums=(0, 1, 2, 3))(q, k, v, params)
  gb = jax.grad(block, argnums=(0, 1, 2, 3))(q, k, v, params)
  for a, b in zip(jax.tree.leaves(gb), jax.tree.leaves(gn)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_no_bias_and_shape_errors():
  q, k, v = _qkv(2, length=20)
  np.testing.assert_allclose(attention.blockwise_attention(q, k, v, q_block=8, k_block=4),
                             attention.naive_attention(q, k, v), rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match='one shape'):
    attention.blockwise_attention(q, k[:, :10], v)


def _temp_mb(fn, *args):
  analysis = jax.jit(fn).lower(*args).compile().memory_analysis()
  return analysis.temp_size_in_bytes / 2**20


def test_blockwise_memory_does_not_grow_with_length_squared():
  params = {'slope': jnp.ones(2), 'w': jnp.ones(2)}
  def grads(impl, length):
    shape = jax.ShapeDtypeStruct((1, length, 2, 8), jnp.float32)
    if impl == 'naive':
      f = lambda q, k, v: jnp.sum(attention.naive_attention(q, k, v, _bias_fn, params))
    else:
      f = lambda q, k, v: jnp.sum(attention.blockwise_attention(q, k, v, _bias_fn, params,
                                                                q_block=256, k_block=256))
    return _temp_mb(jax.grad(f, argnums=(0, 1, 2)), shape, shape, shape)
  # Naive: H x L x L scores, probabilities and bias (2 x 4096^2 floats = 128 MiB each).
  assert grads('naive', 4096) > 128
  # Block-wise: O(L) activations plus a few H x 256 x 256 blocks; doubling L about doubles it.
  small, large = grads('blockwise', 2048), grads('blockwise', 4096)
  assert large < 16 and large < 2.5 * small


def test_transformer_is_causal_and_refuses_long_inputs():
  class Learned(transformer.PositionEncoding):
    ABSOLUTE = True
    max_len: int = 12

    @property
    def max_length(self):
      return self.max_len

    @nn.compact
    def embed(self, x, positions):
      return x + self.param('t', jax.nn.initializers.normal(1.0), (self.max_len, x.shape[-1]))[
          None, positions]

  model = transformer.TransformerLM(vocab_size=11, num_layers=2, d_model=16, num_heads=2,
                                    encoding=Learned)
  tokens = jnp.asarray(np.random.default_rng(3).integers(0, 11, (2, 12)))
  variables = model.init(jax.random.key(0), tokens)
  logits = model.apply(variables, tokens)
  assert logits.shape == (2, 12, 11)
  changed = model.apply(variables, tokens.at[:, 8:].set(0))
  np.testing.assert_allclose(changed[:, :8], logits[:, :8], rtol=1e-5, atol=1e-6)
  with pytest.raises(transformer.SequenceTooLongError, match='13 exceeds the 12 positions'):
    model.apply(variables, jnp.zeros((1, 13), jnp.int32))
  with pytest.raises(ValueError, match='Unknown attention implementation'):
    functools.partial(transformer.TransformerLM, vocab_size=11, d_model=16, num_heads=2,
                      attention='flash')().init(jax.random.key(0), tokens)

"""The platform's standard position encodings (common.models.positions) and their registry."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common import config_lib
from common.models import positions
from common.models.transformer import TransformerLM


def test_baseline_definitions():
  np.testing.assert_allclose(positions.alibi_slopes(8), 2.0 ** -np.arange(1, 9))
  b = np.asarray(positions.t5_bucket(np.array([0, 1, 15, 16, 20, 64, 127, 128, 10_000])))
  assert b[:3].tolist() == [0, 1, 15] and b[3] == 16 and (np.diff(b) >= 0).all() and b[-1] == 31
  # RoPE: q . k depends on i - j only.
  rope = positions.RoPE()
  q = jnp.asarray(np.random.default_rng(4).normal(size=(1, 40, 1, 16)).astype(np.float32))
  same = jnp.broadcast_to(q[:, :1], q.shape)
  rq, rk = rope.apply({}, same, same, jnp.arange(40), method='rotate')
  dots = np.einsum('bqhd,bkhd->qk', rq, rk)
  np.testing.assert_allclose(np.diag(dots, -3)[:-1], np.diag(dots, -3)[1:], rtol=1e-4)
  # Position interpolation squeezes 4x the train length into the trained range of angles.
  pi = positions.RoPE(train_length=10, interpolate=True)
  rq_pi, _ = pi.apply({}, same, same, jnp.arange(40), method='rotate')
  rq_10, _ = rope.apply({}, same[:, :10], same[:, :10], jnp.arange(10) * 0.25, method='rotate')
  np.testing.assert_allclose(rq_pi[:, :10], rq_10, rtol=1e-5, atol=1e-6)


def test_an_encoding_without_a_bias_works_with_any_heads():
  tokens = jax.ShapeDtypeStruct((1, 16), jnp.int32)
  for encoding in (None, positions.RoPE, positions.Sinusoidal,
                   functools.partial(positions.LearnedPositions, max_len=16)):
    model = TransformerLM(vocab_size=7, num_layers=1, d_model=16, num_heads=4, encoding=encoding)
    variables = jax.eval_shape(model.init, jax.random.key(0), tokens)
    assert jax.eval_shape(model.apply, variables, tokens).shape == (1, 16, 7)


def test_build_refuses_an_unknown_name_with_the_closest_one():
  with pytest.raises(config_lib.ConfigError, match=r"Unknown position encoding 'ropee'.*'rope'"):
    positions.build('ropee', num_heads=4, train_length=64)
  with pytest.raises(config_lib.ConfigError, match='num_heads must be a positive integer'):
    positions.build('alibi', num_heads=0, train_length=64)
  with pytest.raises(config_lib.ConfigError, match='train_length must be a positive integer'):
    positions.build('rope', num_heads=4, train_length=0)


def test_build_refuses_an_option_the_encoding_does_not_take():
  with pytest.raises(config_lib.ConfigError, match=r"'rope' takes no option\(s\) \['fire'\]"):
    positions.build('rope', num_heads=4, train_length=64, fire={'mlp_width': 8})


def test_a_registered_encoding_is_built_by_name():
  positions.register('test_only_alibi2', lambda *, num_heads, train_length, max_len, scale=1.0: (
      functools.partial(positions.ALiBi, num_heads=num_heads), scale > 1), options=('scale',))
  try:
    fields = positions.build('test_only_alibi2', num_heads=2, train_length=8, scale=2.0)
    assert fields['share_encoding'] and fields['encoding'].func is positions.ALiBi
  finally:
    positions._REGISTRY.pop('test_only_alibi2')


@pytest.mark.parametrize('name,expected', [
    ('kerple_log', {'r1': (2,), 'r2': (2,)}),
    ('t5', {'table': (2, 32)}),
])
def test_the_parameter_trees_keep_their_names(name, expected):
  """Checkpoints written when the encodings lived in fire_pe restore: the model names every
  encoding module 'position', so where a class lives does not enter the tree."""
  model = TransformerLM(vocab_size=7, num_layers=1, d_model=8, num_heads=2,
                        **positions.build(name, num_heads=2, train_length=8))
  params = jax.eval_shape(model.init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1, 8), jnp.int32))['params']
  encoding = params['layer_0']['position']
  assert {k: v.shape for k, v in encoding.items()} == expected
  absolute = TransformerLM(vocab_size=7, num_layers=1, d_model=8, num_heads=2,
                           **positions.build('learned_absolute', num_heads=2, train_length=8))
  params = jax.eval_shape(absolute.init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1, 8), jnp.int32))['params']
  assert params['position']['table'].value.shape == (8, 8)

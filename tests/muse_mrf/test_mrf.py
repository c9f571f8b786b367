"""The MRF layer: identity at zero pairwise weights, the sign of the update, gradients, dense =
low rank, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from muse_mrf import kernels
from muse_mrf import mrf as mrf_lib


# ---------------------------------------------------------------------------------------------
# The MRF layer.
# ---------------------------------------------------------------------------------------------
def _grid_inputs(b=2, h=4, w=5, v=6, seed=0):
  logits = jax.random.normal(jax.random.key(seed), (b, h * w, v)) * 2
  tokens = jax.random.randint(jax.random.key(seed + 1), (b, h * w), 0, v)
  known = jax.random.bernoulli(jax.random.key(seed + 2), 0.4, (b, h * w))
  return logits, tokens, known


def test_zero_pairwise_weights_give_the_backbone_softmax():
  logits, tokens, known = _grid_inputs()
  for rank in (None, 3):
    layer = mrf_lib.MRFLayer(codebook_size=6, grid=(4, 5), rank=rank)
    variables = layer.init(jax.random.key(0), logits, tokens, known)
    out = layer.apply(variables, logits, tokens, known)   # the init is the identity
    np.testing.assert_allclose(jax.nn.softmax(out), jax.nn.softmax(logits), atol=1e-6)


def test_potts_reward_pulls_an_unsure_position_towards_its_neighbours():
  # 3 x 3 grid, 2 labels; every neighbour known as label 1, the centre's backbone unsure.
  logits = jnp.zeros((1, 3, 3, 2)).at[0, 1, 1].set(jnp.array([0.3, 0.0]))
  known = jnp.ones((1, 3, 3), bool).at[0, 1, 1].set(False)
  tokens = jnp.ones((1, 3, 3), jnp.int32)
  spatial = jnp.ones((1, 3, 3))
  reward = -1.0 * jnp.eye(2)[None]       # energy mu = -I: agreement lowers the energy
  out = kernels.mean_field(logits, spatial, compat=reward, known=known, known_tokens=tokens,
                           iterations=3)
  q = jax.nn.softmax(out[0, 1, 1])
  assert float(q[1]) > 0.99                # 8 neighbours at label 1: logit gap 8 - 0.3
  penalty = kernels.mean_field(logits, spatial, compat=-reward, known=known, known_tokens=tokens,
                               iterations=3)
  assert float(jax.nn.softmax(penalty[0, 1, 1])[1]) < 0.01
  # Known positions never change: their Q is clamped to the token.
  np.testing.assert_array_equal(np.asarray(out[0, 0, 0]), np.asarray(out[0, 0, 0]))


def test_messages_are_a_depthwise_convolution_over_the_window():
  q = jax.random.uniform(jax.random.key(0), (1, 4, 4, 3))
  w = jax.random.normal(jax.random.key(1), (1, 3, 3))
  m = np.asarray(kernels.neighbour_messages(q, w))[0, :, :, 0]
  qn, wn = np.asarray(q)[0], np.asarray(w)[0]
  expect = np.zeros_like(qn)
  for i in range(4):
    for j in range(4):
      for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
          if (dy, dx) != (0, 0) and 0 <= i + dy < 4 and 0 <= j + dx < 4:
            expect[i, j] += wn[dy + 1, dx + 1] * qn[i + dy, j + dx]
  np.testing.assert_allclose(m, expect, rtol=1e-5, atol=1e-6)


def test_dense_and_low_rank_agree_when_a_bt_is_the_dense_matrix():
  logits, tokens, known = _grid_inputs(v=6)
  grid = lambda x: x.reshape((2, 4, 5) + x.shape[2:])
  a = jax.random.normal(jax.random.key(5), (2, 6, 3))
  b = jax.random.normal(jax.random.key(6), (2, 6, 3))
  dense = jnp.einsum('fvr,fur->fvu', a, b)
  spatial = jax.random.uniform(jax.random.key(7), (2, 3, 3))
  kw = dict(known=grid(known), known_tokens=grid(tokens), iterations=4)
  out_d = kernels.mean_field(grid(logits), spatial, compat=dense, **kw)
  out_l = kernels.mean_field(grid(logits), spatial, low_rank=(a, b), **kw)
  np.testing.assert_allclose(out_d, out_l, rtol=1e-4, atol=1e-4)


def test_mean_field_is_differentiable():
  logits, tokens, known = _grid_inputs(b=1, h=3, w=3, v=3)
  grid = lambda x: x.reshape((1, 3, 3) + x.shape[2:])
  spatial = jax.random.uniform(jax.random.key(1), (1, 3, 3))
  compat = jax.random.normal(jax.random.key(2), (1, 3, 3)) * 0.5

  def f(spatial, compat, logits):
    out = kernels.mean_field(logits, spatial, compat=compat, known=grid(known),
                             known_tokens=grid(tokens), iterations=3)
    return jnp.sum(jax.nn.log_softmax(out) * jnp.arange(3.0)[None, None, None, :])

  grads = jax.grad(f, argnums=(0, 1, 2))(spatial, compat, grid(logits))
  assert all(float(jnp.abs(g).sum()) > 0 for g in grads)
  # Directional finite difference in float32 (the float64 check_grads is the slow test below).
  eps, direction = 1e-2, jax.random.normal(jax.random.key(9), compat.shape)
  numeric = (f(spatial, compat + eps * direction, grid(logits)) -
             f(spatial, compat - eps * direction, grid(logits))) / (2 * eps)
  assert float(jnp.sum(grads[1] * direction)) == pytest.approx(float(numeric), rel=2e-2, abs=1e-3)


@pytest.mark.slow
def test_mean_field_gradients_match_finite_differences_in_float64():
  logits, tokens, known = _grid_inputs(b=1, h=3, w=3, v=3)
  grid = lambda x: x.reshape((1, 3, 3) + x.shape[2:])
  from jax.test_util import check_grads  # pylint: disable=g-import-not-at-top
  with jax.enable_x64(True):
    f = lambda s, c, x: jnp.sum(jax.nn.log_softmax(kernels.mean_field(
        x, s, compat=c, known=grid(known), known_tokens=grid(tokens), iterations=3)) *
                                jnp.arange(3.0)[None, None, None, :])
    args = (jax.random.uniform(jax.random.key(1), (1, 3, 3), jnp.float64),
            jax.random.normal(jax.random.key(2), (1, 3, 3), jnp.float64) * 0.5,
            grid(logits).astype(jnp.float64))
    check_grads(f, args, order=1, modes=('rev',), atol=1e-4, rtol=1e-4)


def test_mrf_layer_learns_from_its_identity_init():
  """A few Adam steps on a target only the neighbours explain lower the masked cross-entropy."""
  import optax  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  # Targets: constant 4 x 4 patches of one of 3 labels; the backbone knows nothing (zero logits).
  tokens = np.repeat(np.repeat(rng.integers(0, 3, (64, 2, 2)), 2, 1), 2, 2).reshape(64, 16)
  known = rng.random((64, 16)) < 0.6
  logits = jnp.zeros((64, 16, 3))
  layer = mrf_lib.MRFLayer(codebook_size=3, grid=(4, 4), iterations=3)
  params = layer.init(jax.random.key(0), logits, tokens, known)['params']
  loss = lambda p: mrf_lib.masked_cross_entropy(
      layer.apply({'params': p}, logits, tokens, known), tokens, ~known)
  tx = optax.adam(0.1)
  state = tx.init(params)
  first = float(loss(params))
  step = jax.jit(lambda p, s: (lambda g: (optax.apply_updates(p, tx.update(g, s, p)[0]),
                                          tx.update(g, s, p)[1]))(jax.grad(loss)(p)))
  for _ in range(30):
    params, state = step(params, state)
  assert first == pytest.approx(np.log(3), rel=1e-5)
  assert float(loss(params)) < 0.7 * first


@pytest.mark.parametrize('case,match', [
    ('grid', 'do not fit the 4 x 5'),
    ('codebook', 'codebook_size=6'),
    ('known', 'must be'),
    ('known token', r'Known token 6 at \(batch, row, column\) \(0, 0, 1\) is outside the codebook'),
    ('negative token', r'Known token -1'),
])
def test_mrf_layer_bad_input(case, match):
  logits, tokens, known = _grid_inputs()
  layer = mrf_lib.MRFLayer(codebook_size=6, grid=(4, 5))
  variables = layer.init(jax.random.key(0), logits, tokens, known)
  if case == 'grid':
    logits = logits[:, :16]
  elif case == 'codebook':
    logits = jnp.concatenate([logits, logits], -1)
  elif case == 'known':
    known = known[:, :3]
  else:
    known = known.at[0, 1].set(True)
    tokens = tokens.at[0, 1].set(6 if case == 'known token' else -1)
  with pytest.raises(mrf_lib.MRFError, match=match):
    layer.apply(variables, logits, tokens, known)


def test_mrf_layer_ignores_unknown_positions_tokens_and_under_jit_makes_a_bad_known_token_nan():
  logits, tokens, known = _grid_inputs()
  layer = mrf_lib.MRFLayer(codebook_size=6, grid=(4, 5))
  variables = layer.init(jax.random.key(0), logits, tokens, known)
  variables = {'params': {**variables['params'], 'compat': jnp.ones((1, 6, 6))}}
  # Unknown positions may hold anything (the mask id): their tokens are not read.
  masked = jnp.where(known, tokens, 99)
  np.testing.assert_allclose(layer.apply(variables, logits, masked, known),
                             layer.apply(variables, logits, tokens, known), rtol=1e-6)
  known = known.at[0, 0].set(True)
  bad = tokens.at[0, 0].set(6)
  out = np.asarray(jax.jit(layer.apply)(variables, logits, bad, known))
  assert np.isnan(out[0]).any()                  # the bad token's neighbours are NaN
  assert np.isfinite(out[1]).all()               # the other example is untouched


def test_window_and_kernel_shapes_are_checked():
  for window in (2, 4, 1):
    with pytest.raises(kernels.MRFError, match='odd'):
      kernels.window_offsets(window)
  logits = jnp.zeros((1, 3, 3, 4))
  with pytest.raises(kernels.MRFError, match='codebook size 4'):
    kernels.mean_field(logits, jnp.ones((1, 3, 3)), compat=jnp.zeros((1, 5, 5)))
  with pytest.raises(kernels.MRFError, match='exactly one'):
    kernels.mean_field(logits, jnp.ones((1, 3, 3)))

"""muse_mrf's library: the MaskGIT schedule and decoder, the MRF layer (identity at zero pairwise
weights, the sign of the update, gradients, dense = low rank), samplers, tokenizers, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common.models import transformer
from muse_mrf import kernels
from muse_mrf import maskgit
from muse_mrf import mrf as mrf_lib
from muse_mrf import sampler as sampler_lib
from muse_mrf import tokenizers


# ---------------------------------------------------------------------------------------------
# MaskGIT.
# ---------------------------------------------------------------------------------------------
def test_schedule_is_the_published_decoders():
  assert maskgit.schedule(64, 8) == [62, 59, 53, 45, 35, 24, 12]
  assert maskgit.schedule(64, 4) == [59, 45, 24]
  assert maskgit.schedule(256, 1) == []
  # At least one re-masked while any is unknown, never all of them.
  assert maskgit.schedule(4, 12) == [3, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1]


def test_host_schedule_agrees_with_the_samplers_float32_rule_in_every_cell():
  """Every N <= 2,048, T <= 24, every step (565,248 cells): schedule_table against mask_count run
  as the sampler's compiled step runs it (int32 n0 and unknown vectors, int32 step and T)."""
  rule = jax.jit(maskgit.mask_count)
  sizes = np.arange(1, 2049, dtype=np.int32)
  cells = 0
  for steps in range(1, 25):
    table = maskgit.schedule_table(sizes, steps)
    assert table.shape == (len(sizes), steps - 1)
    left = jnp.asarray(sizes)
    for t in range(steps - 1):
      left = rule(jnp.asarray(sizes), left, jnp.int32(t), jnp.int32(steps))
      np.testing.assert_array_equal(table[:, t], np.asarray(left), err_msg=f'T={steps}, step {t}')
      cells += len(sizes)
  assert cells == 565_248
  # The cell that was one token too high through Python floats.
  assert maskgit.schedule(1313, 9)[-1] == 227


def test_sampler_leaves_the_host_schedules_counts_where_python_floats_were_one_too_high():
  model = transformer.MaskedTokenTransformer(codebook_size=2, num_classes=0, num_tokens=1313,
                                             num_layers=1, d_model=8, num_heads=1)
  params = model.init(jax.random.key(0), jnp.full((1, 1313), model.mask_id))['params']
  out = sampler_lib.Sampler(model, params, num_steps=9).sample(None, jax.random.key(0),
                                                               trace=True)
  masked = [int((t == model.mask_id).sum()) for t in out.trace[:-1]]
  assert masked == maskgit.schedule(1313, 9) and masked[-1] == 227


@pytest.mark.parametrize('steps', [0, -1, 2.5, True])
def test_bad_step_counts_are_refused(steps):
  with pytest.raises(maskgit.DecodingError, match='T='):
    maskgit.check_steps(steps)


def test_cosine_mask_rates_have_the_arccos_density_and_arccos_is_refused_as_its_name():
  rng = jax.random.key(0)
  cos = np.asarray(maskgit.mask_rate(rng, (20000,), 'cosine'))
  # E[cos(pi r / 2)] = 2 / pi for r ~ U[0, 1); Muse's arccos density has CDF 1 - (2/pi) arccos x.
  assert abs(cos.mean() - 2 / np.pi) < 0.01
  assert abs(np.median(cos) - np.cos(np.pi / 4)) < 0.02
  for x in (0.2, 0.5, 0.9):
    assert abs(np.mean(cos <= x) - (1 - 2 / np.pi * np.arccos(x))) < 0.01
  late = np.asarray(maskgit.mask_rate(rng, (1000,), 'cosine', 0.5, 0.95))
  assert late.max() <= np.cos(np.pi / 4) + 1e-6 and late.min() >= np.cos(0.95 * np.pi / 2) - 1e-6
  with pytest.raises(ValueError, match='schedule'):
    maskgit.mask_rate(rng, (4,), 'cubic')
  # One schedule, one name: 'arccos' would repeat the 'cosine' run, so it is not a second option.
  assert 'arccos' not in maskgit.SCHEDULES
  with pytest.raises(ValueError, match="it is the 'cosine' schedule"):
    maskgit.mask_rate(rng, (4,), 'arccos')


def test_random_mask_counts():
  mask = np.asarray(maskgit.random_mask(jax.random.key(0), 64, jnp.array([0.0, 0.3, 1.0])))
  assert mask.sum(-1).tolist() == [1, 20, 64]


def test_remask_keeps_known_tokens_and_masks_exactly_the_count():
  rng = jax.random.key(3)
  logits = jax.random.normal(rng, (2, 64, 8))
  tokens = jnp.full((2, 64), 8).at[:, :5].set(jnp.arange(5) % 8)
  n0 = jnp.array([64, 64])
  new, sampled = maskgit.sample_and_remask(rng, logits, tokens, 8, n0, 2, 8)
  assert np.array_equal(np.asarray(sampled[:, :5]), np.asarray(tokens[:, :5]))
  assert np.array_equal(np.asarray(new[:, :5]), np.asarray(tokens[:, :5]))
  assert (np.asarray(new) == 8).sum(-1).tolist() == [53, 53]
  assert (np.asarray(sampled) < 8).all()


def test_masked_loss_counts_masked_positions_only():
  model = transformer.MaskedTokenTransformer(codebook_size=4, num_classes=2, num_tokens=16,
                                             num_layers=1, d_model=16, num_heads=2)
  tokens = jnp.zeros((2, 16), jnp.int32)
  params = model.init(jax.random.key(0), tokens, jnp.array([0, 1]))['params']
  loss_fn = maskgit.make_loss_fn(model)
  loss, (metrics, _) = loss_fn(params, {}, {'tokens': tokens, 'label': jnp.array([0, 1])},
                               jax.random.key(1))
  assert np.isfinite(float(loss)) and 0 <= float(metrics['masked_accuracy']) <= 1
  logits = jnp.zeros((1, 3, 4)).at[0, 0, 1].set(100.0)
  masked = jnp.array([[False, True, True]])
  # Position 0 (unmasked, confidently wrong) does not count: uniform CE log 4 on the rest.
  ce = mrf_lib.masked_cross_entropy(logits, jnp.zeros((1, 3), jnp.int32), masked)
  assert float(ce) == pytest.approx(np.log(4), rel=1e-5)


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


# ---------------------------------------------------------------------------------------------
# Samplers.
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def tiny_backbone():
  model = transformer.MaskedTokenTransformer(codebook_size=8, num_classes=10, num_tokens=64,
                                             num_layers=1, d_model=16, num_heads=2)
  params = model.init(jax.random.key(0), jnp.full((1, 64), model.mask_id),
                      jnp.zeros((1,), jnp.int32))['params']
  layer = mrf_lib.MRFLayer(codebook_size=8, grid=(8, 8))
  mrf_vars = layer.init(jax.random.key(1), jnp.zeros((1, 64, 8)), jnp.zeros((1, 64), jnp.int32),
                        jnp.zeros((1, 64), bool))
  return model, params, layer, mrf_vars


def test_plain_sampler_follows_the_schedule(tiny_backbone):
  model, params, _, _ = tiny_backbone
  out = sampler_lib.Sampler(model, params, num_steps=8).sample(np.arange(3), jax.random.key(0),
                                                               trace=True)
  masked = [int((t == model.mask_id).sum(-1)[0]) for t in out.trace]
  assert masked == [62, 59, 53, 45, 35, 24, 12, 0]
  assert out.backbone_calls == 8 and out.tokens.shape == (3, 64)
  assert (out.tokens >= 0).all() and (out.tokens < 8).all()
  # Tokens fixed at a step stay fixed.
  for before, after in zip(out.trace, out.trace[1:]):
    known = before != model.mask_id
    assert np.array_equal(before[known], after[known])


def test_mrf_sampler_counts_calls_and_fills_everything(tiny_backbone):
  model, params, layer, mrf_vars = tiny_backbone
  sampler = sampler_lib.Sampler(model, params, num_steps=4, mrf=layer, mrf_params=mrf_vars)
  out = sampler.sample(np.arange(2), jax.random.key(0), trace=True)
  assert [int((t == model.mask_id).sum(-1)[0]) for t in out.trace] == [59, 45, 24, 0]
  assert out.backbone_calls == sampler.calls_per_sample == 4
  assert (out.tokens < 8).all()
  fast = sampler_lib.Sampler(model, params, num_steps=8, mrf=layer, mrf_params=mrf_vars,
                             backbone_steps=4)
  assert fast.sample(np.arange(2), jax.random.key(0)).backbone_calls == 5


def test_sampler_bad_input(tiny_backbone):
  model, params, layer, mrf_vars = tiny_backbone
  with pytest.raises(maskgit.DecodingError, match='T=0'):
    sampler_lib.Sampler(model, params, num_steps=0)
  with pytest.raises(maskgit.DecodingError, match="S'=4"):
    sampler_lib.Sampler(model, params, num_steps=4, mrf=layer, mrf_params=mrf_vars,
                        backbone_steps=4)
  other = mrf_lib.MRFLayer(codebook_size=16, grid=(8, 8))
  with pytest.raises(mrf_lib.MRFError, match='codebook_size=16'):
    sampler_lib.Sampler(model, params, num_steps=4, mrf=other, mrf_params=mrf_vars)
  # A checkpoint of the MRF for another codebook (the layer itself matches).
  wrong = {'params': {**mrf_vars['params'], 'compat': jnp.zeros((1, 16, 16))}}
  with pytest.raises(mrf_lib.MRFError, match='codebook of 16 codes'):
    sampler_lib.Sampler(model, params, num_steps=4, mrf=layer, mrf_params=wrong)
  with pytest.raises(mrf_lib.MRFError, match='grid'):
    sampler_lib.Sampler(model, params, num_steps=4, mrf=mrf_lib.MRFLayer(8, (4, 4)),
                        mrf_params=mrf_vars)


@pytest.mark.parametrize('tau', [-5.0, -1.0, float('nan'), float('inf'), True, '4.5'])
def test_sampler_refuses_a_negative_or_non_finite_tau(tiny_backbone, tau):
  model, params, _, _ = tiny_backbone
  with pytest.raises(maskgit.DecodingError, match='tau='):
    sampler_lib.Sampler(model, params, num_steps=4, tau=tau)
  assert sampler_lib.Sampler(model, params, num_steps=4, tau=0).tau == 0.0  # noise-free: allowed


@pytest.mark.parametrize('labels,match', [
    ([7, 0], r'Class label 7 at index 0 is outside .* 3 classes'),
    ([0, 3], r'Class label 3 at index 1'),        # 3 of 3 classes is the mask token's id
    ([-1], r'Class label -1'),
    ([0.5], 'integer class ids'),
    ([[0, 1]], r'expected \(batch,\)'),
])
def test_sampler_refuses_labels_outside_the_classes_before_its_compiled_step(labels, match):
  model = transformer.MaskedTokenTransformer(codebook_size=4, num_classes=3, num_tokens=16,
                                             num_layers=1, d_model=8, num_heads=1)
  params = model.init(jax.random.key(0), jnp.full((1, 16), model.mask_id),
                      jnp.zeros((1,), jnp.int32))['params']
  with pytest.raises(maskgit.DecodingError, match=match):
    sampler_lib.Sampler(model, params, num_steps=2).sample(np.array(labels), jax.random.key(0))


def test_backbone_logits_under_jit_are_nan_for_a_label_outside_the_classes():
  """Traced labels cannot be refused: the row comes out NaN (a training loss then stops at the
  loop's NaN guard), never the logits of another token's embedding (7 of 3 is clipped onto the
  mask token's)."""
  model = transformer.MaskedTokenTransformer(codebook_size=4, num_classes=3, num_tokens=16,
                                             num_layers=1, d_model=8, num_heads=1)
  tokens = jnp.full((3, 16), model.mask_id)
  params = model.init(jax.random.key(0), tokens[:1], jnp.zeros((1,), jnp.int32))['params']
  logits = jax.jit(lambda p, l: maskgit.backbone_logits(model, p, tokens, l))(
      params, jnp.array([1, 7, 3]))
  assert np.isfinite(np.asarray(logits[0])).all()
  assert np.isnan(np.asarray(logits[1:])).all()
  np.testing.assert_array_equal(
      np.asarray(logits[0]),
      np.asarray(jax.jit(lambda p: model.apply({'params': p}, tokens, jnp.array([1, 1, 1])))(
          params)[0]))
  loss_fn = jax.jit(maskgit.make_loss_fn(model))
  batch = {'tokens': jnp.zeros((2, 16), jnp.int32), 'label': jnp.array([0, 7])}
  loss, _ = loss_fn(params, {}, batch, jax.random.key(1))
  assert np.isnan(float(loss))


def test_mrf_sampler_checks_both_dimensions_of_the_grid():
  """A (2, 8) layer over a 4 x 4 grid has the right number of tokens and the wrong neighbours."""
  model = transformer.MaskedTokenTransformer(codebook_size=4, num_classes=0, num_tokens=16,
                                             num_layers=1, d_model=8, num_heads=1)
  params = model.init(jax.random.key(0), jnp.full((1, 16), model.mask_id))['params']
  wide = mrf_lib.MRFLayer(codebook_size=4, grid=(2, 8))
  wide_vars = wide.init(jax.random.key(1), jnp.zeros((1, 16, 4)))
  with pytest.raises(mrf_lib.MRFError, match=r'grid \(2, 8\) is not the token grid 4 x 4'):
    sampler_lib.Sampler(model, params, num_steps=4, mrf=wide, mrf_params=wide_vars)
  with pytest.raises(mrf_lib.MRFError, match=r'grid \(2, 8\) is not the token grid 4 x 4'):
    sampler_lib.Sampler(model, params, num_steps=4, mrf=wide, mrf_params=wide_vars, grid=(4, 4))
  with pytest.raises(mrf_lib.MRFError, match=r'grid=\(3, 5\): the backbone reads 16 tokens'):
    sampler_lib.Sampler(model, params, num_steps=4, mrf=wide, mrf_params=wide_vars, grid=(3, 5))
  sampler_lib.Sampler(model, params, num_steps=4, mrf=wide, mrf_params=wide_vars, grid=(2, 8))
  # A token count that is no square: the grid must be given.
  long_model = transformer.MaskedTokenTransformer(codebook_size=4, num_classes=0, num_tokens=8,
                                                  num_layers=1, d_model=8, num_heads=1)
  layer = mrf_lib.MRFLayer(codebook_size=4, grid=(2, 4))
  with pytest.raises(mrf_lib.MRFError, match='pass grid'):
    sampler_lib.Sampler(long_model, params, num_steps=4, mrf=layer,
                        mrf_params=layer.init(jax.random.key(1), jnp.zeros((1, 8, 4))))


def test_sampler_compiles_one_plain_step_for_every_step_and_every_t(tiny_backbone):
  """The first step's inputs are placed as the later steps' (replicated on the parameters' mesh):
  one compiled program, not one for step 0 and one for the rest."""
  model, params, _, _ = tiny_backbone
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ('data',))
  placed = jax.device_put(params, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  before = sampler_lib._plain_step._cache_size()
  for steps in (3, 5):
    sampler_lib.Sampler(model, placed, num_steps=steps).sample(np.arange(2), jax.random.key(0))
  assert sampler_lib._plain_step._cache_size() - before == 1


# ---------------------------------------------------------------------------------------------
# The bidirectional backbone.
# ---------------------------------------------------------------------------------------------
def test_masked_transformer_is_bidirectional_and_class_conditional(tiny_backbone):
  model, params, _, _ = tiny_backbone
  tokens = jnp.full((1, 64), model.mask_id)
  base = model.apply({'params': params}, tokens, jnp.array([3]))
  later = model.apply({'params': params}, tokens.at[0, 63].set(2), jnp.array([3]))
  # A change at the last position reaches the first (a causal model could not see it).
  assert float(jnp.abs(base[0, 0] - later[0, 0]).max()) > 1e-6
  other = model.apply({'params': params}, tokens, jnp.array([4]))
  assert float(jnp.abs(base - other).max()) > 1e-6
  assert base.shape == (1, 64, 8)
  with pytest.raises(ValueError, match='neither a codebook id'):
    model.apply({'params': params}, tokens.at[0, 0].set(9), jnp.array([3]))
  with pytest.raises(ValueError, match=r'\(batch, 64\)'):
    model.apply({'params': params}, tokens[:, :10], jnp.array([3]))
  with pytest.raises(ValueError, match='labels'):
    model.apply({'params': params}, tokens)
  with pytest.raises(ValueError, match=r'\[0, 10\)'):
    model.apply({'params': params}, tokens, jnp.array([10]))


def test_causal_lm_is_unchanged_by_default():
  lm = transformer.TransformerLM(vocab_size=11, num_layers=1, d_model=16, num_heads=2)
  tokens = jnp.arange(8)[None] % 11
  params = lm.init(jax.random.key(0), tokens)
  a = lm.apply(params, tokens)
  b = lm.apply(params, tokens.at[0, 7].set(3))
  np.testing.assert_array_equal(np.asarray(a[0, :7]), np.asarray(b[0, :7]))  # causal
  bidir = transformer.TransformerLM(vocab_size=11, num_layers=1, d_model=16, num_heads=2,
                                    causal=False)
  c, d = bidir.apply(params, tokens), bidir.apply(params, tokens.at[0, 7].set(3))
  assert float(jnp.abs(c[0, 0] - d[0, 0]).max()) > 1e-6   # same parameter names, no mask
  with pytest.raises(ValueError, match='causal'):
    bidir.apply(params, tokens, cache={'layer_0': {'key': jnp.zeros((1, 8, 2, 8))}})


# ---------------------------------------------------------------------------------------------
# Tokenizers.
# ---------------------------------------------------------------------------------------------
def test_grey_tokenizer_round_trip_and_bad_grids():
  tok = tokenizers.GreyLevelTokenizer(levels=8)
  images = np.random.default_rng(0).random((5, 8, 8, 1)).astype(np.float32)
  ids = tok.encode(images)
  assert ids.shape == (5, 64) and ids.min() >= 0 and ids.max() < 8
  assert np.abs(tok.decode(ids) - images).max() <= 0.5 / 7 + 1e-6
  np.testing.assert_array_equal(tok.encode(tok.decode(ids)), ids)
  with pytest.raises(tokenizers.TokenizerError, match='does not match the tokenizer'):
    tok.decode(ids[:, :16])
  with pytest.raises(tokenizers.TokenizerError, match='outside the codebook'):
    tok.decode(np.full((1, 64), 8))
  with pytest.raises(tokenizers.TokenizerError, match='images of shape'):
    tok.encode(images[:, :4])


def test_kmeans_tokenizer():
  images = np.random.default_rng(0).random((40, 8, 8, 1)).astype(np.float32)
  tok = tokenizers.KMeansPatchTokenizer(codebook_size=8, patch=2).fit(images, iterations=5)
  ids = tok.encode(images)
  assert ids.shape == (40, 16) and tok.grid == (4, 4)
  recon = tok.decode(ids)
  assert recon.shape == images.shape
  # Nearest-centre assignment: re-encoding the decoded images gives the same codes.
  np.testing.assert_array_equal(tok.encode(recon), ids)


@pytest.mark.slow
def test_vq_autoencoder_straight_through_and_save_load(tmp_path):
  model = tokenizers.VQAutoencoder(codebook_size=16, embed_dim=4, width=8, num_downsamples=1)
  images = jax.random.uniform(jax.random.key(0), (4, 8, 8, 1))
  params = model.init(jax.random.key(1), images)['params']
  loss_fn = tokenizers.make_vq_loss_fn(model)
  grads = jax.grad(lambda p: loss_fn(p, {}, {'inputs': images}, None)[0])(params)
  # The reconstruction's gradient reaches the encoder through the straight-through estimator.
  assert float(jnp.abs(grads['enc_0']['kernel']).sum()) > 0
  assert float(jnp.abs(grads['codebook']).sum()) > 0
  tok = tokenizers.VQTokenizer(model, params, (8, 8, 1))
  ids = tok.encode(np.asarray(images))
  assert ids.shape == (4, 16) and tok.grid == (4, 4)
  path = tok.save(str(tmp_path / 'vq.msgpack'))
  loaded = tokenizers.VQTokenizer.load(path)
  np.testing.assert_array_equal(loaded.encode(np.asarray(images)), ids)
  np.testing.assert_allclose(loaded.decode(ids), tok.decode(ids), atol=1e-6)
  with pytest.raises(tokenizers.TokenizerError, match='codebook of 16 codes'):
    tokenizers.VQTokenizer.load(path, codebook_size=8192)
  with pytest.raises(tokenizers.TokenizerError, match='does not match'):
    loaded.decode(ids.reshape(8, 8))

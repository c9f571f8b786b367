"""The samplers (plain and MRF: schedules, calls, labels, tau, grids, compiles) and the
bidirectional backbone."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common.models import transformer
from muse_mrf import maskgit
from muse_mrf import mrf as mrf_lib
from muse_mrf import sampler as sampler_lib


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

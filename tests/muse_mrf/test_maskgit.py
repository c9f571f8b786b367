"""The MaskGIT schedule (the host table and the compiled rule agree in every cell), mask rates,
re-masking and the masked loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common.models import transformer
from muse_mrf import maskgit
from muse_mrf import mrf as mrf_lib
from muse_mrf import sampler as sampler_lib


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

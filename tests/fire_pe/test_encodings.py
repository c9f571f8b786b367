"""FIRE: its representation theorem (ALiBi, Kerple-log, T5), its two evaluation paths and its
piecewise-affine form, names and bad input. The baselines themselves: tests/common/test_positions.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fire_pe
from common import config_lib
from common.models import positions
from common.models.transformer import TransformerLM
from fire_pe import encodings

LENGTH = 64


def _fire_bias(module, params, length=LENGTH):
  fn, prepared = module.apply({'params': params}, length, method='bias')
  return np.asarray(fn(prepared, 0, 0, length, length))


def _causal(bias):
  i, j = np.tril_indices(bias.shape[-1])
  return bias[:, i, j]


def _linear_fire(num_heads, c, threshold, weights):
  """FIRE whose MLP passes its (non-negative) input through one ReLU unit times `weights`."""
  module = fire_pe.FIRE(num_heads=num_heads, init_c=c, init_threshold=threshold)
  params = jax.tree.map(np.asarray, module.init(jax.random.key(0), 8, method='bias')['params'])
  params['w0'] = np.zeros_like(params['w0'])
  params['w0'][0, 0] = 1.0
  params['b0'] = np.zeros_like(params['b0'])
  params['w1'] = np.zeros_like(params['w1'])
  params['w1'][0] = weights
  return module, params


def _rel(length=LENGTH):
  return np.arange(length)[:, None] - np.arange(length)[None, :]


def test_fire_represents_alibi_as_c_goes_to_zero():
  heads = 8
  slopes = np.asarray(positions.alibi_slopes(heads))
  alibi = _causal(-slopes[:, None, None] * np.maximum(_rel(), 0)[None])
  errors = []
  for c in (1e-1, 1e-2, 1e-3, 1e-4):
    module, params = _linear_fire(heads, c, LENGTH, -slopes * LENGTH)
    errors.append(np.abs(_causal(_fire_bias(module, params)) - alibi).max())
  assert all(b < a for a, b in zip(errors, errors[1:])), errors
  assert errors[-1] < errors[-2] / 5 < errors[-3] / 25, errors        # O(c) as c -> 0
  assert errors[-1] < 1e-3 * np.abs(alibi).max()
  # And ALiBi's own bias is that function.
  fn, p = positions.ALiBi(num_heads=heads).apply({}, LENGTH, method='bias')
  np.testing.assert_allclose(_causal(np.asarray(fn(p, 0, 0, LENGTH, LENGTH))), alibi, rtol=1e-6)


def test_fire_represents_kerple_log_exactly():
  r1, r2 = np.array([0.5, 1.0, 2.0, 3.0]), 0.3
  kerple = _causal(-r1[:, None, None] * np.log1p(r2 * np.maximum(_rel(), 0))[None])
  module, params = _linear_fire(4, r2, LENGTH, -r1 * np.log1p(r2 * LENGTH))
  np.testing.assert_allclose(_causal(_fire_bias(module, params)), kerple, rtol=1e-5, atol=1e-5)
  # Kerple's own module (r1 and r2 through softplus; r2 is per head there, one value here).
  inv = lambda y: np.log(np.expm1(y))
  fn, p = positions.Kerple(num_heads=4, kind='log').apply(
      {'params': {'r1': inv(r1), 'r2': inv(np.full(4, r2))}}, LENGTH, method='bias')
  np.testing.assert_allclose(_causal(np.asarray(fn(p, 0, 0, LENGTH, LENGTH))), kerple,
                             rtol=1e-5, atol=1e-5)


def test_fire_fits_a_t5_bias_table():
  """T5's bias is a step function of the distance; a ReLU MLP of the (monotone) FIRE input is
  piecewise linear. One hidden unit with its kink just before and one at each bucket boundary
  gives every step exactly at integer distances; the readout is then fitted by least squares."""
  heads, length, width = 4, 128, 64
  table = np.random.default_rng(0).normal(size=(heads, 32)).astype(np.float32)
  distances = np.arange(length)
  target = table[:, np.asarray(positions.t5_bucket(distances))]          # (H, distance)
  module = fire_pe.FIRE(num_heads=heads, mlp_width=width, init_threshold=length)
  params = jax.tree.map(np.asarray, module.init(jax.random.key(1), length, method='bias')['params'])
  _, prepared = module.apply({'params': params}, length, method='bias')
  x = np.asarray(encodings.fire_inputs(np.zeros(length), distances, prepared['c'],
                                       prepared['threshold'], log_transform=True, threshold=True,
                                       interpolate=True))
  boundaries = np.flatnonzero(np.diff(target[0]) != 0) + 1            # first distance of a bucket
  knots = np.concatenate([x[boundaries - 1], x[boundaries]])[:width]
  knots = np.pad(knots, (0, width - len(knots)), constant_values=2.0)  # spare units stay off
  params['w0'] = np.ones((1, width), np.float32)
  params['b0'] = -knots.astype(np.float32)
  hidden = np.maximum(x[:, None] - knots[None, :], 0)
  design = np.concatenate([hidden, np.ones((length, 1))], axis=1)
  solution = np.linalg.lstsq(design, target.T, rcond=None)[0]
  params['w1'], params['b1'] = solution[:-1].astype(np.float32), solution[-1].astype(np.float32)
  fitted = _fire_bias(module, params, length)[:, -1, ::-1]            # last row: distances 0..L-1
  assert np.abs(fitted - target).max() < 1e-3 * np.abs(target).max()
  # With half the units (one kink per boundary) the steps become ramps: a worse fit.
  half = np.maximum(x[:, None] - x[boundaries][None, :], 0)
  coarse = np.linalg.lstsq(np.concatenate([half, np.ones((length, 1))], 1), target.T, rcond=None)
  assert coarse[1].sum() > 1e-2


def test_fire_table_and_per_pair_paths_agree():
  module = fire_pe.FIRE(num_heads=3, init_threshold=20.0)
  params = module.init(jax.random.key(2), 8, method='bias')['params']
  fn, prepared = module.apply({'params': params}, 48, method='bias')
  fn = jax.jit(fn, static_argnums=(3, 4))   # one compiled block per shape, not op by op
  flags = dict(log_transform=True, threshold=True, interpolate=True)
  for q_start, k_start in ((0, 0), (8, 0), (16, 8)):              # rows <= 20: the table
    block = np.asarray(fn(prepared, q_start, k_start, 4, 8))
    i, _, rel = positions.relative(q_start, k_start, 4, 8)
    x = encodings.fire_inputs(i, rel, prepared['c'], prepared['threshold'], **flags)
    direct = np.moveaxis(np.asarray(encodings.fire_mlp(prepared['mlp'], x)), -1, 0)
    np.testing.assert_allclose(block, direct, rtol=1e-5, atol=1e-6)
  # Past the threshold the normaliser is psi(i): rows differ for the same distance.
  late = np.asarray(fn(prepared, 40, 0, 4, 40))
  assert not np.allclose(late[:, 0, 0], late[:, 1, 1])


@pytest.mark.parametrize('flags', [
    dict(log_transform=True, threshold=True, freeze_at=40.0),
    dict(log_transform=True, threshold=False),
    dict(log_transform=False, threshold=True)])
def test_fire_piecewise_form_equals_the_mlp_values_and_gradients(flags):
  """The per-pair path's piecewise-affine evaluation against the MLP itself, on parameters with
  kinks inside and outside [0, 1], a unit with zero weight, and both orientations."""
  rng = np.random.default_rng(5)
  width, heads, c, threshold = 16, 3, 0.3, 12.0
  w0 = rng.normal(size=(1, width)).astype(np.float32)
  w0[0, 3] = 0.0
  b0 = (-w0[0] * rng.uniform(-0.5, 1.5, width)).astype(np.float32)
  b0[3] = 0.4
  mlp = [(jnp.asarray(w0), jnp.asarray(b0)),
         (jnp.asarray(rng.normal(size=(width, heads)).astype(np.float32)),
          jnp.asarray(rng.normal(size=(heads,)).astype(np.float32)))]
  i = jnp.arange(8, 72)[:, None]
  rel = jnp.maximum(i - jnp.arange(0, 48)[None, :], 0)
  args = (jnp.float32(c), jnp.float32(threshold))

  def mlp_form(mlp, c, threshold):
    x = encodings.fire_inputs(i, rel, c, threshold, interpolate=True, **flags)
    return jnp.moveaxis(encodings.fire_mlp(mlp, x), -1, 0)

  def piecewise(mlp, c, threshold):
    return encodings.fire_piecewise(mlp, i, rel, c, threshold, **flags)

  expected, actual = jax.jit(mlp_form)(mlp, *args), jax.jit(piecewise)(mlp, *args)
  np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)
  cotangent = jnp.asarray(rng.normal(size=expected.shape).astype(np.float32))
  grad = lambda fn: jax.jit(lambda *a: jax.vjp(fn, *a)[1](cotangent))(mlp, *args)
  for a, b in zip(jax.tree.leaves(grad(piecewise)), jax.tree.leaves(grad(mlp_form))):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-4 * float(np.abs(b).max()))


def test_a_misspelt_fire_field_is_refused_with_the_closest_one():
  with pytest.raises(config_lib.ConfigError, match=r"FIRE has no field 'mlp_widht'.*'mlp_width'"):
    fire_pe.build('fire', num_heads=4, train_length=64, fire={'mlp_widht': 8})
  with pytest.raises(config_lib.ConfigError, match="FIRE has no field 'mlp_widht'"):
    positions.build('fire_s', num_heads=4, train_length=64, fire={'mlp_widht': 8})


def test_fire_is_built_through_the_platform_registry():
  fields = positions.build('fire_s', num_heads=4, train_length=64, fire={'mlp_width': 8})
  assert fields['share_encoding'] and fields['encoding'].func is fire_pe.FIRE
  assert fields['encoding'].keywords['mlp_width'] == 8
  assert fields['encoding'].keywords['init_threshold'] == 64.0


def test_unknown_encoding_lists_the_available_ones():
  with pytest.raises(config_lib.ConfigError, match=r"Unknown position encoding 'fier'.*'fire'"):
    fire_pe.build('fier', num_heads=4, train_length=64)
  with pytest.raises(config_lib.ConfigError, match="'log' or 'power'"):
    positions.Kerple(num_heads=2, kind='cubic').init(jax.random.key(0), 8, method='bias')


def test_every_encoding_runs_in_the_model_and_fire_s_shares():
  """Traced (shapes only: the tiny experiment runs them); each built and applied."""
  tokens = jax.ShapeDtypeStruct((1, 16), jnp.int32)
  sizes = {}
  for name in fire_pe.ENCODINGS:
    model = TransformerLM(vocab_size=7, num_layers=2, d_model=16, num_heads=2,
                          **fire_pe.build(name, num_heads=2, train_length=16))
    variables = jax.eval_shape(model.init, jax.random.key(0), tokens)
    assert jax.eval_shape(model.apply, variables, tokens).shape == (1, 16, 7)
    sizes[name] = sum(x.size for x in jax.tree.leaves(variables))
  per_layer_fire = sizes['fire'] - sizes['nope']
  assert sizes['fire_s'] - sizes['nope'] == per_layer_fire // 2  # one module, not two


@pytest.mark.parametrize('attention', ['naive', 'blockwise'])
@pytest.mark.parametrize('name', ['alibi', 'kerple_log', 't5', 'fire', 'fire_s'])
def test_an_encoding_built_for_other_heads_is_refused_by_name(name, attention):
  """A 4-head encoding in a 2-head model used to fail with a broadcasting TypeError."""
  model = TransformerLM(vocab_size=7, num_layers=2, d_model=16, num_heads=2, attention=attention,
                        block_size=8, **fire_pe.build(name, num_heads=4, train_length=16))
  with pytest.raises(ValueError, match=r'for 4 heads .*expected \(2, 1, 1\).*num_heads=2'):
    model.init(jax.random.key(0), jnp.zeros((1, 16), jnp.int32))
  with pytest.raises(config_lib.ConfigError, match='num_heads must be a positive integer'):
    fire_pe.build(name, num_heads=0, train_length=16)


def _hidden_units(params, depth, x):
  """Each hidden layer's activations (len(x), width) of FIRE's MLP on inputs x."""
  h, out = np.asarray(x, np.float64)[:, None], []
  for n in range(depth):
    h = np.maximum(h @ np.asarray(params[f'w{n}']) + np.asarray(params[f'b{n}']), 0.0)
    out.append(h)
  return out


@pytest.mark.parametrize('depth', [1, 2])
def test_fire_init_leaves_no_unit_dead_and_spreads_the_kinks(depth):
  """Flax's usual init (LeCun weights, zero biases) left half the units dead on x >= 0 and every
  live kink at 0 (f linear at the start); FIRE's init puts a kink of every unit inside [0, 1]."""
  width, x = 32, np.linspace(0.0, 1.0, 2001)
  for seed in range(3):
    module = fire_pe.FIRE(num_heads=4, mlp_width=width, mlp_depth=depth, init_threshold=16.0)
    params = module.init(jax.random.key(seed), 8, method='bias')['params']
    for layer, h in enumerate(_hidden_units(params, depth, x)):
      live = (h > 0).mean(axis=0)
      assert live.min() > 0, (seed, layer, live)          # no dead unit on [0, 1]
      assert live.max() < 1, (seed, layer, live)          # and none linear on all of it
    kinks = np.sort(-np.asarray(params['b0']) / np.asarray(params['w0'][0]))
    assert 0 < kinks[0] and kinks[-1] < 1
    assert np.diff(np.concatenate([[0.0], kinks, [1.0]])).max() <= 2.0 / width  # spread over [0, 1]
    w0 = np.asarray(params['w0'][0])
    assert 8 < (w0 > 0).sum() < 24                        # both orientations
    # The old init, for contrast: half dead.
    old = np.maximum(x[:, None] * w0[None], 0.0)
    assert ((old > 0).mean(axis=0) == 0).sum() >= 8
  # Without interpolation the input is psi(i - j), not in [0, 1]: the kinks spread over
  # [0, psi(init_threshold)] instead.
  module = fire_pe.FIRE(num_heads=4, interpolate=False, init_threshold=16.0, init_c=0.1)
  params = module.init(jax.random.key(0), 8, method='bias')['params']
  kinks = -np.asarray(params['b0']) / np.asarray(params['w0'][0])
  assert kinks.max() > 0.8 and kinks.max() < np.log1p(1.6)

"""mup_depth: the parameterisation, the one-step measurement, eta*, the fit, the rule, the run."""

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mup_depth
from common import config_lib
from common import report
from common.models import MLP
from configs.mup_depth import sweep as sweep_config
from mup_depth import claims
from mup_depth import experiment
from mup_depth import one_step
from mup_depth import parameterisation as mlp
from mup_depth import rule
from mup_depth import sweep
from mup_depth import training_check


def test_initialisation_variances():
  n, n_in = 512, 64
  params = mlp.init(jax.random.key(0), n_in, n, 4, parameterisation='mean_field')
  np.testing.assert_allclose(jnp.var(params['first']), 1 / n_in, rtol=0.05)
  np.testing.assert_allclose(jnp.var(params['hidden']), 2 / n, rtol=0.05)
  np.testing.assert_allclose(jnp.var(params['readout']), 1 / n**2, rtol=0.2)
  standard = mlp.init(jax.random.key(0), n_in, n, 4, parameterisation='standard')
  np.testing.assert_allclose(jnp.var(standard['readout']), 1 / n, rtol=0.2)
  # He initialisation keeps the pre-activations' scale through depth.
  z, _ = mlp.preactivations(params, jax.random.normal(jax.random.key(1), (256, n_in)))
  assert 0.5 < float(jnp.mean(z**2)) < 2.0


def test_preactivation_layers_and_shapes():
  params = mlp.init(jax.random.key(0), 5, 16, 3, num_outputs=2)
  x = jnp.ones((4, 5))
  z1, f = mlp.preactivations(params, x, layer=1)
  np.testing.assert_allclose(z1, x @ params['first'], rtol=1e-6)
  z3, _ = mlp.preactivations(params, x, layer=3)
  manual = jax.nn.relu(jax.nn.relu(z1) @ params['hidden'][0]) @ params['hidden'][1]
  np.testing.assert_allclose(z3, manual, rtol=1e-5)
  assert f.shape == (4, 2)
  with pytest.raises(ValueError, match='layer must be in 1..3'):
    mlp.preactivations(params, x, layer=4)


def _problem(n=128, depth=8, seed=0):
  k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
  return (mlp.init(k1, 32, n, depth), jax.random.normal(k2, (8, 32)),
          jax.random.normal(k3, (8, 1)))


def test_exact_change_matches_the_linearisation_at_small_eta():
  params, x, y = _problem()
  a = one_step.linear_coefficient(params, x, y)
  for eta in (1e-3, 1e-2):
    exact = one_step.change_exact(params, x, y, eta)
    np.testing.assert_allclose(exact / (eta**2 * a), 1.0, rtol=0.02)


def test_only_hidden_layers_move_with_hidden_only_rates():
  params, x, y = _problem(depth=3)
  d = one_step.step_direction(params, x, y, one_step.HIDDEN_ONLY)
  assert float(jnp.abs(d['first']).max()) == 0 and float(jnp.abs(d['readout']).max()) == 0
  assert float(jnp.abs(d['hidden']).max()) > 0


def test_exact_eta_star_crosses_the_threshold():
  params, x, y = _problem()
  a = one_step.linear_coefficient(params, x, y)
  eta, ok = one_step.eta_star_exact(params, x, y, threshold=1e-4)
  assert bool(ok)
  np.testing.assert_allclose(one_step.change_exact(params, x, y, eta), 1e-4, rtol=1e-3)
  # Deep in the linear regime the exact and closed-form answers agree.
  np.testing.assert_allclose(eta, one_step.eta_star_linear(a, 1e-4), rtol=0.05)


def test_bisection_reports_a_grid_that_never_crosses():
  eta, ok = one_step.bisect_log(lambda e: e**2, 4.0, 1e-3, 1e3)
  np.testing.assert_allclose(eta, 2.0, rtol=1e-6)
  eta, ok = one_step.bisect_log(lambda e: jnp.minimum(e, 0.5), 4.0, 1e-3, 1e3)
  assert not bool(ok) and np.isnan(eta)
  eta, ok = one_step.first_crossing(lambda e: jnp.minimum(e, 0.5), 4.0, jnp.geomspace(0.1, 10, 5))
  assert not bool(ok) and np.isnan(eta)


def test_a_step_that_moves_nothing_has_an_infinite_eta_star_not_nan():
  """Zero inputs (or a zero residual) give a zero gradient: no step size moves z, so eta* is
  +inf with bracketed False, eagerly, under jit and under vmap; it used to come out NaN."""
  params, x, y = _problem(n=16, depth=3)
  zero_x = jnp.zeros_like(x)
  zero_residual = mlp.apply(params, x)  # y = f(x): the loss is at its minimum
  for inputs, targets in ((zero_x, y), (x, zero_residual)):
    eta, ok = one_step.eta_star_exact(params, inputs, targets)
    assert float(eta) == np.inf and not bool(ok)
    assert float(one_step.eta_star_linear(one_step.linear_coefficient(params, inputs,
                                                                      targets))) == np.inf
  frozen = {'first': 0.0, 'hidden': 0.0, 'readout': 0.0}
  eta, ok = one_step.eta_star_exact(params, x, y, lr_multipliers=frozen)
  assert float(eta) == np.inf and not bool(ok)
  batched = jax.jit(jax.vmap(lambda xs: one_step.eta_star_exact(params, xs, y)))
  eta, ok = batched(jnp.stack([zero_x, x]))
  assert float(eta[0]) == np.inf and not bool(ok[0])
  assert np.isfinite(float(eta[1])) and bool(ok[1])


def test_fit_recovers_known_exponents():
  widths, depths = (64, 128, 256), (4, 8, 16, 32)
  eta = np.array([[3.0 * d**-1.5 * n**0.2 for d in depths] for n in widths])
  b, c, a = sweep.least_squares_exponents(eta, widths, depths, min_depth=8)
  np.testing.assert_allclose([b, c, np.exp(a)], [-1.5, 0.2, 3.0], rtol=1e-6)
  with pytest.raises(ValueError, match='at least two depths'):
    sweep.least_squares_exponents(eta, widths, depths, min_depth=32)


def test_sweep_is_vmapped_over_seeds_and_warns_for_narrow_nets():
  result = sweep.run_sweep(widths=(16,), depths=(2, 8), num_seeds=4, exact=True)
  assert result.coefficient.shape == (1, 2, 4)
  assert any('n=16 is not much larger than L=8' in w for w in result.warnings)
  # The same seed at one (n, L) gives the same number whether alone or in a chunk.
  alone = sweep.run_sweep(widths=(16,), depths=(8,), num_seeds=1, exact=False)
  np.testing.assert_allclose(alone.coefficient[0, 0, 0], result.coefficient[0, 1, 0], rtol=1e-5)


def test_both_parameterisations_share_one_compiled_program():
  """The parameterisation is an input of the measurement, not part of the program: the standard
  contrast at the sweep's shapes compiles nothing new, and its numbers are its own."""
  kwargs = dict(widths=(16,), depths=(8,), num_seeds=2, exact=False, input_dim=8)
  mean_field = sweep.run_sweep(**kwargs)
  compiled = sweep._measure._cache_size()
  standard = sweep.run_sweep(parameterisation='standard', **kwargs)
  assert sweep._measure._cache_size() == compiled
  # Readout std 1/n against 1/sqrt(n): the standard network's step moves z more.
  assert (standard.coefficient > mean_field.coefficient).all()
  with pytest.raises(ValueError, match="Unknown parameterisation 'ntk'"):
    sweep.run_sweep(parameterisation='ntk', **kwargs)


def test_the_tiny_contrast_runs_through_the_sweeps_programs():
  """What keeps the end-to-end test's compiles down (one per (n, L) of the sweep, none for the
  contrast): the contrast's shapes, seeds and estimator are the sweep's."""
  config = sweep_config.get_config('tiny')
  sweep_cfg, contrast = config.sweep, config.contrast
  assert set(contrast.widths) <= set(sweep_cfg.widths)
  assert set(contrast.depths) <= set(sweep_cfg.depths)
  for field in ('num_seeds', 'exact', 'batch_size', 'input_dim'):
    assert contrast[field] == sweep_cfg[field], field
  # Still two depths in the fit and two widths: both exponents are determined.
  assert len([d for d in sweep_cfg.depths if d >= config.fit_min_depth]) >= 2
  assert len(sweep_cfg.widths) >= 2


def test_bad_shapes_are_refused():
  with pytest.raises(ValueError, match='depth must be a positive integer'):
    mlp.init(jax.random.key(0), 4, 8, 0)
  with pytest.raises(ValueError, match='width must be a positive integer'):
    sweep.run_sweep(widths=(0,), depths=(2,), num_seeds=1)
  with pytest.raises(ValueError, match='depth and base_depth must be >= 1'):
    rule.depth_multiplier(0, 4)


def test_empty_or_seedless_sweeps_are_refused():
  """An empty grid used to return an empty SweepResult without a word."""
  with pytest.raises(ValueError, match=r'at least one width and one depth, got widths=\(\), '
                     r'depths=\(2, 4\)'):
    mup_depth.run_sweep(widths=(), depths=(2, 4), num_seeds=2)
  with pytest.raises(ValueError, match=r'at least one width and one depth, got widths=\(16,\), '
                     r'depths=\(\)'):
    mup_depth.run_sweep(widths=(16,), depths=(), num_seeds=2)
  for bad in (0, -1, 2.5):
    with pytest.raises(ValueError, match=f'num_seeds must be a positive integer, got {bad}'):
      mup_depth.run_sweep(widths=(16,), depths=(2,), num_seeds=bad)
  with pytest.raises(ValueError, match='threshold .* must be positive, got 0.0'):
    mup_depth.run_sweep(widths=(16,), depths=(2,), num_seeds=1, threshold=0.0)


@jax.jit
def _reference_sgd_step(params, x, y, lr, rates):
  """Plain SGD as the training check once wrote it by hand: p <- p - lr * rate[layer] * grad."""
  loss, grads = jax.value_and_grad(training_check._ce_loss)(params, x, y)
  return {k: params[k] - lr * rates[k] * grads[k] for k in params}, loss


def _reference_sgd(key, x, y, rows, lr, rates, width, depth):
  params, losses = mlp.init(key, x.shape[-1], width, depth, 10), []
  for r in rows:
    params, loss = _reference_sgd_step(params, x[r], y[r], lr, rates)
    losses.append(loss)
  return jnp.stack(losses)


def test_training_check_steps_with_the_depth_rule():
  """train_grid uses the optax rule users get (rule.depth_scaled_sgd): at base_depth = depth it
  is plain SGD at the given hidden rate; at base_depth < depth the hidden layers alone slow down
  by (depth / base_depth)^(-3/2)."""
  rng = np.random.default_rng(0)
  arrays = {'inputs': rng.normal(size=(48, 12)).astype(np.float32),
            'label': np.arange(48) % 10}
  x, y = jnp.asarray(arrays['inputs']), jnp.asarray(arrays['label'], jnp.int32)
  rows = jnp.asarray(rng.permutation(48).reshape(3, 16))  # the shapes train_grid makes below
  lrs = jnp.array([0.3, 3.0])
  train = lambda rates, base_depth: training_check._train_grid(
      jax.random.key(1), x, y, rows, lrs, {k: jnp.float32(v) for k, v in rates.items()},
      width=16, depth=8, base_depth=base_depth, num_classes=10)
  own, scaled = train(one_step.ALL_LAYERS, 8), train(one_step.ALL_LAYERS, 2)
  chex.assert_shape((own, scaled), (2, 3))
  factor = (8 / 2) ** -1.5
  for i, lr in enumerate(lrs):
    chex.assert_trees_all_close(own[i], _reference_sgd(
        jax.random.key(1), x, y, rows, lr, one_step.ALL_LAYERS, 16, 8), rtol=1e-5)
    chex.assert_trees_all_close(scaled[i], _reference_sgd(
        jax.random.key(1), x, y, rows, lr, {'first': 1.0, 'hidden': factor, 'readout': 1.0}, 16,
        8), rtol=1e-5)
  assert not np.allclose(own, scaled)
  # The same through the public entry point: rates tuned at L = 2, or scaled by hand.
  tuned = training_check.train_grid(arrays, 16, 8, [0.8, 8.0], batch_size=16, base_depth=2)
  by_hand = training_check.train_grid(arrays, 16, 8, [0.8 * factor, 8.0 * factor], batch_size=16,
                                      base_depth=8)
  chex.assert_trees_all_close(tuned, by_hand, rtol=1e-5)
  with pytest.raises(ValueError, match='depth and base_depth must be >= 1'):
    training_check.train_grid(arrays, 16, 8, [0.1], batch_size=16, base_depth=0)
  with pytest.raises(ValueError, match=r'batch_size <= examples \(48\)'):
    training_check.train_grid(arrays, 16, 8, [0.1], batch_size=49)
  with pytest.raises(ValueError, match='non-empty 1-D grid of learning rates'):
    training_check.train_grid(arrays, 16, 8, [], batch_size=16)


def test_rule_scales_only_hidden_layers_of_a_flax_mlp():
  model = MLP(widths=(8, 8, 8), num_outputs=3)
  params = jax.tree.map(jnp.ones_like, model.init(jax.random.key(0), jnp.ones((1, 4)))['params'])
  params = jax.tree.map(lambda p: p.value if hasattr(p, 'value') else p, params,
                        is_leaf=lambda p: hasattr(p, 'value'))
  tx = rule.depth_scaled_sgd(0.1, depth=16, base_depth=4)
  updates, _ = tx.update(params, tx.init(params), params)
  factor = (16 / 4) ** -1.5
  np.testing.assert_allclose(updates['hidden_1']['kernel'], -0.1 * factor)
  np.testing.assert_allclose(updates['hidden_2']['bias'], -0.1 * factor)
  np.testing.assert_allclose(updates['hidden_0']['kernel'], -0.1)  # first layer
  np.testing.assert_allclose(updates['readout']['kernel'], -0.1)


def test_training_check_summary_finds_divergence():
  lrs = np.array([0.1, 1.0, 10.0, 100.0])
  losses = np.array([[2.2] * 10, [1.5] * 10, [np.nan] * 10, [2.302585] * 10])
  s = training_check.summarise(lrs, losses, initial_loss=np.log(10))
  assert s['best_lr'] == 1.0 and s['max_stable_lr'] == 1.0
  per_depth = {4: s, 16: training_check.summarise(lrs, losses[[0, 0, 1, 2]], np.log(10))}
  t = training_check.transfer(lrs, per_depth, base_depth=4)
  assert t['per_depth'][16]['scaled_lr'] == pytest.approx(1.0 / 8)


def test_tiny_config_runs_end_to_end(tmp_path):
  config = sweep_config.get_config('tiny')
  summary = experiment.run(config, str(tmp_path))
  assert summary['verdict'] in ('reproduced', 'not reproduced', 'inconclusive')
  assert summary['reproduced'] == report.verdict_from(summary['checks'])
  # Issue 27's form: every check states its comparison and its own state; the deciding ones are
  # decided by an interval (never a single value), with the thresholds of config.checks.
  checks = {c['name']: c for c in summary['checks']}
  assert all(c['state'] in report.STATES and c['compare'] for c in checks.values())
  deciding = [c for c in checks.values() if not c['informational']]
  assert {c['name'] for c in deciding} == {'exponent_in_L', 'exponent_in_n'}
  assert all(c['evidence'] == 'interval' and c['interval'] for c in deciding)
  assert checks['exponent_in_L']['compare'] == 'in'
  assert checks['exponent_in_L']['threshold'] == list(config.checks.exponent_L)
  assert checks['exponent_in_n']['threshold'] == list(config.checks.exponent_n)
  fit = summary['numbers']['fits']['linear_mean']
  assert -3.0 < fit['exponent_L'] < -0.5  # a steep fall with depth, even at this tiny scale
  assert checks['exponent_in_L']['interval'] == [pytest.approx(fit['exponent_L_lo']),
                                                 pytest.approx(fit['exponent_L_hi'])]
  # Issue 31: the exponent by the depths in the fit, and the local exponents, as 'Diagnosis'.
  titles = [t['title'] for t in summary['tables']]
  by_range = next(t for t in summary['tables'] if t['title'].startswith('Diagnosis: the exponent'))
  assert [r[0] for r in by_range['rows']] == ['L >= 4', 'L >= 8', 'L >= 4, with a 1/L term']
  assert any(t.startswith('Diagnosis: the local exponent') for t in titles)
  assert all(t['rows'] for t in summary['tables'])
  assert (tmp_path / 'eta_vs_depth.png').exists() and (tmp_path / 'training_check.png').exists()
  saved = json.load(open(tmp_path / 'summary.json'))
  assert saved['claim'] == experiment.CLAIM
  assert 'numbers' in saved and 'checks' not in saved['numbers']
  assert 'mean_field_over_standard' in saved['numbers']['standard_parameterisation']
  # A progress record per (n, L) cell of the sweep and then the contrast; the cells saved.
  records = [json.loads(line) for line in open(tmp_path / 'metrics.jsonl')]
  cells = [(n, d, 0.0) for n in config.sweep.widths for d in config.sweep.depths] + [
      (n, d, 1.0) for n in config.contrast.widths for d in config.contrast.depths]
  assert [(r['width'], r['depth'], r['standard']) for r in records] == cells
  assert [r['step'] for r in records] == list(range(1, len(cells) + 1))
  assert not any(r['reused'] for r in records) and len(list((tmp_path / 'cells').iterdir())) == (
      len(cells))


def _power_law_result(exponent=-1.5, correction=1.5, num_seeds=16, noise=0.05):
  """A sweep whose eta* follows L^exponent exp(correction / L) (a finite-depth correction that
  steepens small depths), flat in n, with mildly noisy per-seed A."""
  widths, depths = (256, 512), (2, 4, 8, 16, 32, 64)
  rng = np.random.default_rng(0)
  eta = np.array([[d ** exponent * np.exp(correction / d) for d in depths] for _ in widths])
  a = (1.0 / eta ** 2)[..., None] * np.exp(noise * rng.normal(size=(2, 6, num_seeds)))
  return sweep.SweepResult(widths, depths, 1.0, a, None, [])


def test_a_finite_depth_correction_settles_as_small_depths_leave_the_fit():
  """The diagnosis on a known law L^-1.5 with a 1/L correction: the L >= 2 fit is steeper, the
  exponent moves toward -1.5 as small depths leave (a paired change whose interval excludes 0),
  and the fit with a 1/L term recovers -1.5 from every depth."""
  config = sweep_config.get_config('cpu')
  result = _power_law_result()
  with config.unlocked():
    config.num_bootstrap = 200
  diagnosis = claims.exponents_by_fit_range(config, result)
  rows = diagnosis['by_min_depth']
  exponents = [r['linear_mean']['exponent_L'] for r in rows]
  assert [r['min_depth'] for r in rows] == [2, 4, 8, 16]
  assert exponents[0] < -1.65 and all(np.diff(exponents) > 0) and exponents[-1] < -1.5
  assert rows[-1]['change_from_widest']['interval'][0] > 0
  corrected = diagnosis['with_1_over_L_correction']
  assert corrected['exponent_L_lo'] < -1.5 < corrected['exponent_L_hi']
  np.testing.assert_allclose(corrected['exponent_L'], -1.5, atol=0.02)
  local = [r['linear_mean']['exponent_L'] for r in diagnosis['local']]
  assert len(local) == 5 and all(np.diff(local) > 0)
  tables = claims.diagnosis_tables(config, diagnosis)
  assert [t['title'].split(' (')[0] for t in tables] == [
      'Diagnosis: the exponent in L by the depths in the fit',
      'Diagnosis: the local exponent between consecutive depths']
  assert [r[0] for r in tables[0]['rows']][-1] == 'L >= 2, with a 1/L term'
  assert tables[0]['rows'][0][3] == 'fails' and tables[0]['rows'][-1][3] == 'holds'
  assert all(len(r) == len(tables[0]['columns']) for r in tables[0]['rows'])
  assert abs(rows[0]['mean_minus_median']['value']) < 0.05  # no heavy tail in this law


def test_an_exponent_whose_interval_straddles_the_range_is_inconclusive():
  """'-1.66 [-1.72, -1.57]' against [-1.65, -1.35] is inconclusive (it was 'does not hold'); an
  interval wholly outside fails, wholly inside holds."""
  config = sweep_config.get_config('cpu')
  fit = lambda b, lo, hi: {'exponent_L': b, 'exponent_L_lo': lo, 'exponent_L_hi': hi,
                           'exponent_n': -0.07, 'exponent_n_lo': -0.09, 'exponent_n_hi': 0.02,
                           'min_depth': 8}
  state = lambda f: {c['name']: c['state'] for c in claims.claim_checks(config, f, None, None)}
  assert state(fit(-1.66, -1.72, -1.57)) == {'exponent_in_L': 'inconclusive',
                                              'exponent_in_n': 'holds'}
  assert state(fit(-1.80, -1.90, -1.70))['exponent_in_L'] == 'fails'
  assert state(fit(-1.50, -1.60, -1.40))['exponent_in_L'] == 'holds'


def test_fits_over_a_depth_window_and_one_width():
  widths, depths = (64, 128), (4, 8, 16, 32)
  eta = np.array([[3.0 * d**-1.5 * (1 if d <= 8 else 0.5) for d in depths] for _ in widths])
  b, c, _ = sweep.least_squares_exponents(eta, widths, depths, min_depth=4, max_depth=8)
  np.testing.assert_allclose([b, c], [-1.5, 0.0], atol=1e-9)
  b, c, _ = sweep.least_squares_exponents(eta[:1], widths[:1], depths, min_depth=16)
  assert b == pytest.approx(-1.5) and np.isnan(c)
  with pytest.raises(ValueError, match='at least three depths with 8 <= L to fit an exponent in '
                     'L with a 1/L correction; got 2'):
    sweep.least_squares_exponents(eta, widths, (2, 4, 8, 16), min_depth=8, correction=True)


def test_seed_chunks_divide_the_seeds_so_each_cell_compiles_once():
  """A remainder chunk (32 seeds in 7s: 7, 7, 7, 7, 4) compiled a second program per (n, L)."""
  assert sweep.seed_chunk(1024, 16) == 7
  assert sweep.seed_chunk(1024, 16, num_seeds=32) == 4
  assert sweep.seed_chunk(1024, 64, num_seeds=32) == 1
  assert sweep.seed_chunk(64, 4, num_seeds=8) == 8
  for width, depth in ((256, 64), (512, 32), (1024, 32)):
    chunk = sweep.seed_chunk(width, depth, num_seeds=32)
    assert 32 % chunk == 0 and chunk <= sweep.seed_chunk(width, depth)


def test_library_surface():
  for name in ('init', 'eta_star_exact', 'linear_coefficient', 'run_sweep', 'fit_exponents',
               'scale_hidden_by_depth'):
    assert hasattr(mup_depth, name)
  assert isinstance(mup_depth.depth_scaled_sgd(0.1, 8, 4), optax.GradientTransformation)


@pytest.mark.parametrize('variant', sweep_config.VARIANTS)
def test_every_variant_passes_check_config(variant):
  experiment.check_config(sweep_config.get_config(variant))


@pytest.mark.parametrize('field,value,match', [
    ('sweep.widths', (64, 0), r'sweep.widths=\(64, 0\): expected a non-empty sequence of whole'),
    ('sweep.depths', (), r'sweep.depths=\(\)'),
    # One width ran the whole sweep, then the summary failed on the exponent in n's (nan, nan).
    ('sweep.widths', (64, 64), r'sweep.widths=\(64, 64\): the exponent in n .* needs two widths'),
    ('sweep.num_seeds', 0, r'sweep.num_seeds=0'),
    ('sweep.threshold', 0.0, r'sweep.threshold=0.0: expected a finite number in \(0.0, inf\]'),
    ('contrast.batch_size', 0, r'contrast.batch_size=0'),
    ('fit_min_depth', 16, r'fit_min_depth=16 leaves 1 of sweep.depths=\(4, 8, 16\) in the fit'),
    ('num_bootstrap', 0, r'num_bootstrap=0'),
    ('training.base_depth', 8, r'training.base_depth=8 is not in training.depths=\(2, 4\)'),
    ('training.lr_max', 0.001, r'training.lr_max=0.001: expected a finite number in \(0.01, '),
    ('training.epochs', 0, r'training.epochs=0'),
    ('checks.exponent_L', (-1.35, -1.65),
     r'checks.exponent_L=\(-1.35, -1.65\): expected \(low, high\)'),
    ('checks.exponent_n', (0.1,), r'checks.exponent_n=\(0.1,\): expected \(low, high\)'),
    ('checks.transfer_win_fraction', -0.5, r'checks.transfer_win_fraction=-0.5'),
    ('diagnosis_min_depths', (4, 16), r'diagnosis_min_depths=\(4, 16\): 16 leaves 1 of '
     r'sweep.depths=\(4, 8, 16\)'),
])
def test_bad_config_fields_are_refused_before_any_compute(tmp_path, field, value, match):
  """fit_min_depth above all but one depth, or a base depth that is not trained, used to fail
  only after the whole sweep (or the training check) had run."""
  config = sweep_config.get_config('tiny')
  config_lib.set_fields(config, **{field: value})
  with pytest.raises(config_lib.ConfigError, match=match):
    experiment.run(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()


def test_a_disabled_contrast_or_training_check_is_not_checked():
  config = sweep_config.get_config('tiny')
  config_lib.set_fields(config, **{'contrast.enabled': False, 'contrast.batch_size': 0,
                                   'training.enabled': False, 'training.base_depth': 99})
  experiment.check_config(config)


def test_a_stopped_sweep_resumes_from_the_cells_it_saved(tmp_path, monkeypatch):
  """The paper variant's sweep runs for hours on an accelerator and restarted from nothing when
  stopped. Each (n, L) cell is now saved as it finishes and read back by a rerun under the same
  settings (a grown grid measures only its new cells); other settings measure afresh."""
  kwargs = dict(depths=(2, 4), num_seeds=2, exact=True, input_dim=8, cell_dir=str(tmp_path))
  seen = []
  first = sweep.run_sweep(widths=(16,), on_cell=lambda *a: seen.append((a[0], a[1], a[-1])),
                          **kwargs)
  assert sorted(p.name for p in tmp_path.iterdir()) == ['mean_field_n16_L2.npz',
                                                        'mean_field_n16_L4.npz']
  assert seen == [(16, 2, False), (16, 4, False)]
  measured = []
  measure = sweep._measure
  monkeypatch.setattr(sweep, '_measure', lambda keys, *a, **k: (
      measured.append((k['width'], k['depth'])), measure(keys, *a, **k))[1])
  grown = sweep.run_sweep(widths=(16, 32), **kwargs)
  assert measured == [(32, 2), (32, 4)]   # width 16's cells read back
  np.testing.assert_array_equal(grown.coefficient[0], first.coefficient[0])
  np.testing.assert_array_equal(grown.eta_exact[0], first.eta_exact[0])
  measured.clear()
  sweep.run_sweep(widths=(16,), **dict(kwargs, num_seeds=3))
  assert measured == [(16, 2), (16, 4)]   # other settings: measured again
  measured.clear()
  sweep.run_sweep(widths=(16,), parameterisation='standard', **dict(kwargs, num_seeds=3))
  assert measured == [(16, 2), (16, 4)]


def test_the_memory_estimate_compiles_the_sweeps_largest_cell():
  from common import memory as memory_lib  # pylint: disable=g-import-not-at-top
  from mup_depth import memory  # pylint: disable=g-import-not-at-top
  config = sweep_config.get_config('tiny')   # n in {64, 128}, L up to 16, 8 seeds
  estimate = memory.sweep_step(config, None)
  # The 8 seeds' MLPs at n = 128, L = 16 (input 64, one output), float32.
  assert estimate.params == 8 * 4 * (64 * 128 + 15 * 128 * 128 + 128)
  assert estimate.devices == 1 and estimate.temporaries > 0
  assert 'n=128, L=16, 8 seed(s) per chunk of 8' in estimate.note
  assert isinstance(estimate, memory_lib.Estimate) and estimate.fits()

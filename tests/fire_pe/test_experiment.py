"""The length-generalisation experiment: its evaluation by query-position bucket, the frozen-
normaliser diagnostic, the learned-FIRE report, randomised positions, config errors; end to end on
the tiny variant (slow)."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fire_pe
from common import config_lib
from common import report
from common.data import loader
from common.models import positions as positions_lib
from configs.fire_pe import lm as lm_config
from fire_pe import diagnostics
from fire_pe import encodings
from fire_pe import evaluation
from fire_pe import experiment
from fire_pe import lm


def _config(**changes):
  """The tiny variant at 1x and 2x; `changes` set fields ('checks.margin' for nested ones)."""
  config = lm_config.get_config('tiny')
  with config.unlocked():
    config.eval_factors = (1, 2)
    config.checks.factors, config.checks.side_factors = (2,), ()
    config.eval_tokens = 256
    for key, value in changes.items():
      *path, field = key.split('.')
      target = config
      for part in path:
        target = target[part]
      setattr(target, field, value)
  return config


def _params(config, name, seed=0):
  """Random model parameters of the right shapes (no init compile); FIRE's from its own init."""
  model = lm.make_model(config, name)
  shapes = jax.eval_shape(model.init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1, config.train_length), jnp.int32))['params']
  rng = np.random.default_rng(seed)
  params = jax.tree.map(lambda s: (0.3 * rng.standard_normal(s.shape)).astype(np.float32),
                        shapes)
  fire = lm.make_model(config, name).encoding(name='position')
  for layer in [k for k in params if k.startswith('layer_')]:
    if 'position' in params[layer]:
      params[layer]['position'] = fire.init(jax.random.key(seed), 8, method='bias')['params']
  return params


def test_query_buckets():
  assert evaluation.query_buckets(64, 512) == [(0, 32), (32, 64), (64, 128), (128, 256),
                                              (256, 512)]
  assert evaluation.query_buckets(64, 64) == [(0, 32), (32, 64)]
  assert evaluation.query_buckets(16, 40) == [(0, 8), (8, 16), (16, 32), (32, 40)]
  assert evaluation.bucket_name((256, 512)) == '256-511'


def test_buckets_average_to_the_loss_and_the_frozen_normaliser_changes_only_long_rows():
  config = _config()
  params = _params(config, 'fire')
  test_ids = loader.load_text('stdlib_text', 'test', max_bytes=20_000)
  normal = evaluation.evaluate(config, 'fire', params, test_ids)
  frozen = evaluation.evaluate(config, 'fire', params, test_ids, fire_overrides={
      'freeze_normaliser_at': float(config.train_length - 1)})
  for out in (normal, frozen):
    for factor, row in out.items():
      length = factor * config.train_length
      sizes = [b - a for a, b in evaluation.query_buckets(config.train_length, length)]
      mean = np.dot(sizes, list(row['buckets'].values())) / length
      np.testing.assert_allclose(mean, row['all'], rtol=1e-6)
      half = row['buckets'][f'{length // 2}-{length - 1}']
      np.testing.assert_allclose(half, row['second_half'], rtol=1e-6)
  # At the train length the frozen normaliser is FIRE's; past it the long rows change.
  assert frozen[1] == normal[1]
  assert frozen[2]['buckets']['0-7'] == normal[2]['buckets']['0-7']
  assert frozen[2]['buckets']['16-31'] != normal[2]['buckets']['16-31']


def test_frozen_normaliser_bias():
  module = fire_pe.FIRE(num_heads=2, init_threshold=4.0)
  frozen = fire_pe.FIRE(num_heads=2, init_threshold=4.0, freeze_normaliser_at=15.0)
  params = module.init(jax.random.key(3), 8, method='bias')['params']
  bias = lambda m, n: np.asarray(
      (lambda fn, p: fn(p, 0, 0, n, n))(*m.apply({'params': params}, n, method='bias')))
  np.testing.assert_array_equal(bias(module, 16), bias(frozen, 16))
  long, long_frozen = bias(module, 48), bias(frozen, 48)
  np.testing.assert_array_equal(long[:, :16], long_frozen[:, :16])
  # Past row 15 the frozen bias depends on the distance only: row 40 at distance d is row 20's.
  np.testing.assert_allclose(long_frozen[:, 40, 40 - np.arange(20)],
                             long_frozen[:, 20, 20 - np.arange(20)], rtol=1e-6)
  assert not np.allclose(long[:, 40, 40 - np.arange(20)], long[:, 20, 20 - np.arange(20)])


def test_learned_fire_report():
  config = _config()
  params = _params(config, 'fire')
  learned = diagnostics.learned_fire(config, params)
  assert set(learned) == {'layer_0', 'layer_1'}
  layer = learned['layer_0']
  assert layer['c'] == pytest.approx(config.fire.init_c)
  assert layer['threshold'] == pytest.approx(config.fire.init_threshold_fraction * 16)
  assert layer['dead_units'] == [0]                   # the init leaves none dead
  assert min(layer['affine_r2']) < 0.999              # and f is not affine at the start
  scales = [layer['normaliser_scale'][str(f)] for f in config.eval_factors]
  assert scales[0] == 1.0 and scales[1] < 1.0
  c, threshold = layer['c'], layer['threshold']
  assert scales[1] == pytest.approx(np.log1p(c * 15) / np.log1p(c * 31), abs=1e-3)
  # A hand-set affine f (one unit from 0, the others dead) fits with R^2 = 1 and 31 dead units.
  p = params['layer_0']['position']
  p['w0'] = np.zeros_like(p['w0'])
  p['w0'][0, 0] = 2.0
  p['b0'] = np.zeros_like(p['b0'])
  layer = diagnostics.learned_fire(config, params)['layer_0']
  assert min(layer['affine_r2']) == pytest.approx(1.0) and layer['dead_units'] == [31]


def test_random_positions():
  key = jax.random.key(0)
  for seed in range(5):
    positions = np.asarray(fire_pe.random_positions(jax.random.fold_in(key, seed), 16, 128))
    assert positions.shape == (16,) and positions.dtype == np.int32
    assert (np.diff(positions) > 0).all() and positions.min() >= 0 and positions.max() < 128
  assert len({tuple(np.asarray(fire_pe.random_positions(jax.random.key(s), 16, 128)))
              for s in range(5)}) == 5
  with pytest.raises(ValueError, match='Cannot draw 16 distinct positions below 8'):
    fire_pe.random_positions(key, 16, 8)


def test_training_positions_reach_fire_only():
  positions = jnp.asarray([0, 3, 4, 9, 20, 21, 40, 63], jnp.int32)
  module = fire_pe.FIRE(num_heads=2, init_threshold=4.0)
  params = module.init(jax.random.key(1), 8, method='bias')['params']

  def bias(m, p):
    fn, prepared = m.apply({'params': p}, 8, method='bias')
    return np.asarray(fn(prepared, 0, 0, 8, 8))

  plain = bias(module, params)
  with fire_pe.training_positions(positions):
    moved = bias(module, params)
  i = np.asarray(positions, np.float32)[:, None]
  rel = np.maximum(i - np.asarray(positions, np.float32)[None], 0)
  _, prepared = module.apply({'params': params}, 8, method='bias')
  x = encodings.fire_inputs(jnp.asarray(i), jnp.asarray(rel), prepared['c'],
                            prepared['threshold'], log_transform=True, threshold=True,
                            interpolate=True)
  expected = np.moveaxis(np.asarray(encodings.fire_mlp(prepared['mlp'], x)), -1, 0)
  causal = np.tril(np.ones((8, 8), bool))
  np.testing.assert_allclose(moved[:, causal], expected[:, causal], rtol=1e-5, atol=1e-6)
  assert not np.allclose(moved[:, causal], plain[:, causal])
  kerple = positions_lib.Kerple(num_heads=2)
  kp = kerple.init(jax.random.key(0), 8, method='bias')['params']
  with fire_pe.training_positions(positions):
    np.testing.assert_array_equal(bias(kerple, kp), bias(kerple, kp))
  with pytest.raises(ValueError, match=r'positions must have shape \(8,\)'):
    module.apply({'params': params}, 8, positions[:4], method='bias')


def test_config_errors(tmp_path):
  for changes, match in (
      ({'encodings': ('nope', 'fier')}, r"'fier'.*'fire'"),
      ({'checks.encoding': 'fire_s'}, "config.checks.encoding names 'fire_s', which is not in"),
      ({'checks.contenders': ('nope', 'rope')},
       "config.checks.contenders names 'rope', which is not in config.encodings"),
      ({'checks.contenders': ('fire',)}, 'names no encoding besides config.checks.encoding'),
      ({'checks.below': ('fire',)}, "config.checks.below names the claim encoding 'fire'"),
      ({'checks.margin': -0.1}, r'config.checks.margin=-0.1: expected a finite number >= 0'),
      ({'checks.margin': float('nan')}, r'config.checks.margin=nan'),
      ({'one_seed': ('nope',)}, "config.checks.contenders names 'nope', which config.one_seed"),
      ({'diagnose': ('nope',)}, "config.diagnose names 'nope'"),
      ({'diagnose': ('fire_no_interpolation',)}, 'thresholded, log-transformed'),
      ({'seeds': 0}, 'config.seeds=0'),
      ({'checks.side_factors': (8,)},
       r'config.checks.side_factors \[8\] are not in config.eval_factors'),
  ):
    with pytest.raises(config_lib.ConfigError, match=match):
      experiment.run(_config(**changes), str(tmp_path))
  config = _config()
  with config.unlocked():
    config.regime.train_lengths = (32,)
    config.regime.encodings = ('nope',)
  with pytest.raises(config_lib.ConfigError, match="regime.encodings must include 'fire'"):
    experiment.run(config, str(tmp_path))
  config = _config()
  with config.unlocked():   # 16 windows of 16 tokens do not make whole windows of 96
    config.regime.train_lengths = (32, 96)
  assert config.regime.same_tokens
  with pytest.raises(config_lib.ConfigError, match=r'do not divide into whole windows of \[96\]'):
    experiment.run(config, str(tmp_path))


def test_regime_keeps_the_tokens_of_a_step():
  """With regime.same_tokens the batch shrinks as the train length grows (batch x length as at
  config.train_length); without it the batch stays. The regime's encodings, factors, seeds."""
  config = _config()
  with config.unlocked():
    config.regime.train_lengths = (32, 64)
    config.regime.seeds = 2
  for length, batch in ((32, 8), (64, 4)):
    sub = experiment.regime_config(config, length)
    assert (sub.train_length, sub.loop.batch_size) == (length, batch)
    assert sub.encodings == tuple(config.regime.encodings) and sub.seeds == 2
    assert sub.eval_factors == tuple(config.regime.factors)
  with config.unlocked():
    config.regime.same_tokens = False
  assert experiment.regime_config(config, 64).loop.batch_size == 16


def test_windows_and_text_errors():
  ids = loader.load_text('stdlib_text', 'test', max_bytes=1000)
  assert len(ids) == 1000 and ids.min() >= loader.BYTE_OFFSET
  w = lm.windows(ids, 65, max_windows=3)
  assert w.shape == (3, 65) and (w[1] == ids[65:130]).all()
  with pytest.raises(loader.DatasetError, match='not one window of 2000'):
    lm.windows(ids, 2000)
  with pytest.raises(loader.DatasetError, match='Unknown text corpus'):
    loader.load_text('no_such_corpus', 'train')


@pytest.mark.slow
def test_tiny_config_runs_end_to_end(tmp_path):
  """The whole study on the tiny variant: four encodings trained (FIRE with randomised
  positions among them), evaluated, diagnosed, reported."""
  config = lm_config.get_config('tiny')
  summary = experiment.run(config, str(tmp_path))
  on_disk = json.loads((tmp_path / 'summary.json').read_text())
  assert on_disk['reproduced'] == summary['reproduced'] and on_disk['name'] == 'fire_pe'
  assert summary['checks'] and summary['tables'] and all(t['rows'] for t in summary['tables'])
  assert summary['reproduced'] == report.verdict_from(summary['checks'])
  losses = summary['numbers']['losses']
  assert set(losses) == {*config.encodings, 'fire' + diagnostics.FROZEN}
  # Learned absolute positions stop at the train length: reported, not clipped or crashed.
  assert losses['learned_absolute']['2'] == evaluation.NOT_REPRESENTABLE
  assert isinstance(losses['learned_absolute']['1'], dict)
  for name in ('nope', 'fire', 'fire_random_positions', 'fire' + diagnostics.FROZEN):
    for factor in ('1', '2', '4', '8'):
      assert 0 < losses[name][factor]['second_half'] < 6   # below log(259) = 5.56 + slack
    assert losses[name]['final_train_loss'] < 4.5         # below a uniform guess
  assert losses['fire' + diagnostics.FROZEN]['1'] == losses['fire']['1']
  # The checks in the new form: one value against one threshold, each with its own state, the
  # deciding ones over an interval (one seed here: unbounded, so inconclusive, never decided by a
  # single difference); no checks tree beside the list.
  assert 'checks' not in summary['numbers'] and set(summary['numbers']['gaps']) == {'4x'}
  assert set(summary['numbers']['side_gaps']) == {'8x'}
  assert [(c['name'].split(':')[0], c['compare'], c['informational'])
          for c in summary['checks']] == [
              ('4x', '<=', False), ('4x', '<', False),
              ("8x (beside the paper's range)", '<=', True),
              ("8x (beside the paper's range)", '<', True)]
  for c in summary['checks']:
    assert c['state'] in ('holds', 'fails', 'inconclusive')
    assert c['evidence'] == 'interval' and c['state'] == 'inconclusive'
  assert summary['verdict'] == 'inconclusive'
  diagnosis = [t for t in summary['tables'] if t['title'].startswith('Diagnosis: ')]
  assert len(diagnosis) == 1 and diagnosis[0]['columns'][1:] == ['2x (32)', '4x (64)', '8x (128)']
  learned = summary['numbers']['learned_fire']['fire'][0]
  assert set(learned) == {'layer_0', 'layer_1'} and learned['layer_0']['c'] > 0
  assert all(os.path.exists(tmp_path / f) for f in summary['figures'])
  assert 'fire_f.png' in summary['figures']


def test_the_study_holds_no_optimizer_state_and_only_the_models_evaluated_again(monkeypatch,
                                                                                 tmp_path):
  """The study kept every encoding's whole TrainResult, so each one's Adam state (twice its
  parameters) and weights stayed on the devices while the next encodings trained (the c4
  rehearsal's host memory on 8 fake devices grew by ~1 GB an encoding). Now only the histories
  stay, and RoPE's weights until rope_pi (evaluated with them) is done."""
  import gc  # pylint: disable=g-import-not-at-top
  import types  # pylint: disable=g-import-not-at-top
  import weakref  # pylint: disable=g-import-not-at-top

  class Tree:
    pass

  made = {}   # encoding -> (weakref to its params, weakref to its optimizer state)
  evaluated = []

  def train(config, name, seed, train_ids, workdir):
    del config, seed, train_ids, workdir
    params, opt_state = Tree(), Tree()
    params.name = name
    made[name] = (weakref.ref(params), weakref.ref(opt_state))
    state = types.SimpleNamespace(params=params, opt_state=opt_state)
    return types.SimpleNamespace(state=state, history=[{'step': 1, 'loss': len(name)}])

  def evaluate(config, name, params, test_ids, **kwargs):
    del test_ids, kwargs
    evaluated.append((name, params.name))
    gc.collect()
    alive = sorted(n for n, (p, o) in made.items() if p() is not None or o() is not None)
    assert all(o() is None for p, o in made.values()), 'an optimizer state is still held'
    # RoPE's weights wait for rope_pi; no other earlier model is held.
    assert alive == {'nope': ['nope'], 'rope': ['rope'], 'fire': ['fire', 'rope'],
                     'rope_pi': ['rope']}[name], (name, alive)
    return {f: {'second_half': 1.0, 'all': 1.0, 'buckets': {'0-1': 1.0}}
            for f in config.eval_factors}

  monkeypatch.setattr(lm, 'train_encoding', train)
  monkeypatch.setattr(evaluation, 'evaluate', evaluate)
  monkeypatch.setattr(diagnostics, 'learned_fire', lambda config, params: {})
  config = _config(encodings=('nope', 'rope', 'fire', 'rope_pi'), diagnose=())
  out = experiment.study(config, str(tmp_path), None, None)
  assert evaluated == [('nope', 'nope'), ('rope', 'rope'), ('fire', 'fire'), ('rope_pi', 'rope')]
  assert sorted(made) == ['fire', 'nope', 'rope']   # rope_pi reused RoPE's training
  assert out['table']['rope_pi']['final_train_loss'] == 4
  gc.collect()
  assert all(p() is None for p, _ in made.values())

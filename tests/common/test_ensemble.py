"""Many models at once: the weighted loss, 1 vs 8 devices, chunking, resume, bad input."""

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from common import checkpoint as ckpt_lib
from common import classifier
from common import config_lib
from common import ensemble
from common import mesh as mesh_lib
from common import models
from common import train as train_lib
from common.data import loader
from configs.common import loop as loop_config


@pytest.fixture(scope='module')
def digits():
  return loader.load('digits', 'train'), loader.load('digits', 'test')


def _config(num_models=8, **overrides):
  config = loop_config.get_config(batch_size=32, total_steps=40, log_every_steps=10,
                                  checkpoint_every_steps=20, mesh=(('data', 1), ('model', -1)),
                                  optimizer=loop_config.optimizer(learning_rate=3e-3))
  config.ensemble = loop_config.ensemble(num_models)
  return config_lib.set_fields(config, **overrides)


def _model():
  return models.build({'name': 'mlp', 'widths': (16,)}, 10)


def _per_example_loss(model):
  def loss_fn(params, model_state, batch, rng):
    del rng
    logits = model.apply({'params': params, **model_state}, batch['inputs'])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch['label']), ({}, {})
  return loss_fn


def _masks(num_models, n, fraction=0.7, seed=0):
  rng = np.random.default_rng(seed)
  masks = np.zeros((num_models, n), bool)
  for m in range(num_models):
    masks[m, rng.choice(n, int(fraction * n), replace=False)] = True
  return masks


def _train(config, workdir, train, weights=None, mesh=None):
  model = _model()
  return ensemble.train_ensemble(
      config, str(workdir), init_fn=lambda rng: model.init(rng, train['inputs'][:1]),
      loss_fn=_per_example_loss(model), arrays=train, weights=weights, mesh=mesh)


def test_weighted_loss_is_normalised_over_the_examples_a_model_sees():
  """One SGD step of l_i = w . x_i: the update is -lr * sum_i v_i x_i / sum_i v_i per model."""
  loss_fn = lambda params, ms, batch, rng: (batch['x'] @ params['w'], ({}, ms))
  step = ensemble.make_step(loss_fn, optax.sgd(1.0), seed=0)
  x = np.arange(12, dtype=np.float32).reshape(6, 2)
  weights = np.array([[1, 0, 1, 0, 1, 0], [0.5, 2, 0, 0, 0, 1]], np.float32)
  state = ensemble.EnsembleState(
      step=jnp.zeros((), jnp.int32), params={'w': jnp.zeros((2, 2))}, opt_state=((), ()),
      model_state={}, nonfinite_step=jnp.full((2,), -1, jnp.int32))
  state = jax.tree.map(jnp.asarray, state)
  state = state.replace(opt_state=jax.vmap(optax.sgd(1.0).init)(state.params))
  indices = np.tile(np.arange(6, dtype=np.int32), (1, 2, 1))  # (S=1, M=2, B=6)
  new, metrics = step(state, {'x': jnp.asarray(x)}, jnp.asarray(weights), indices, 0, 0)
  expected = -(weights @ x) / weights.sum(1, keepdims=True)
  np.testing.assert_allclose(new.params['w'], expected, rtol=1e-6)
  assert metrics['loss'].shape == (2,)


def test_models_draw_only_their_own_examples(digits):
  masks = _masks(4, len(digits[0]['label']))
  order = ensemble.EnsembleOrder(masks.astype(np.float32), 32, seed=0)
  seen = [set() for _ in range(4)]
  for k in range(60):  # past an epoch
    rows = order.indices(k)
    for m in range(4):
      seen[m].update(rows[m].tolist())
  for m in range(4):
    assert seen[m] <= set(np.flatnonzero(masks[m]).tolist())
  rows = order.indices(0)
  assert len({tuple(r) for r in rows}) == 4  # each model its own order


def test_one_device_and_eight_devices_and_chunks_agree(digits, tmp_path):
  train, test = digits
  masks = _masks(8, len(train['label']))
  one = mesh_lib.make_mesh((('data', 1), ('model', 1)), jax.devices()[:1])
  runs = {
      'one': _train(_config(), tmp_path / 'one', train, masks, mesh=one),
      'eight': _train(_config(), tmp_path / 'eight', train, masks),
      # Two dispatches of one model per device each (models 0-3, then 4-7).
      'chunked': _train(_config(**{'ensemble.chunk_size': 1}, mesh=(('data', 2), ('model', 4))),
                        tmp_path / 'chunked', train, masks),
  }
  assert runs['eight'].state.params['hidden_0']['kernel'].sharding.spec == mesh_lib.P('model')
  ref = jax.tree.map(np.asarray, runs['one'].state.params)
  for name in ('eight', 'chunked'):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5),
                 ref, jax.tree.map(np.asarray, runs[name].state.params))
  model = _model()
  logits = ensemble.predict(runs['eight'].state, model.apply, test['inputs'], batch_size=128)
  assert logits.shape == (8, len(test['label']), 10)
  correct = ensemble.correctness(logits, test['label'])
  assert correct.shape == (8, len(test['label'])) and 0.3 < correct.mean() <= 1
  losses = ensemble.cross_entropy(logits, test['label'])
  assert losses.shape == correct.shape and np.all(losses >= 0)
  # The models differ: their own inits, orders and subsets.
  assert len({round(float(c), 4) for c in correct.mean(1)}) > 1


def test_a_model_that_diverges_stops_the_run_before_a_checkpoint(digits, tmp_path):
  """Model 2 of 4 alone sees an example whose input is NaN: the run stops naming it."""
  train, _ = digits
  train = dict(train, inputs=train['inputs'].copy())
  train['inputs'][0] = np.nan
  masks = np.ones((4, len(train['label'])), bool)
  masks[:, 0] = False
  masks[2, 0] = True
  config = _config(4, mesh=(('data', 2), ('model', 4)), checkpoint_every_steps=200,
                   **{'ensemble.chunk_size': 1})
  with pytest.raises(train_lib.NonFiniteLossError, match=r'1 model\(s\) \(\[2\]\) first at step'):
    _train(config, tmp_path, train, masks)
  assert not list((tmp_path / 'checkpoints').glob('[0-9]*'))


def test_model_arrays_give_each_model_its_own_targets(digits, tmp_path):
  """Model m learns the labels shifted by m, carried per model in model_arrays (M, N)."""
  train, test = digits
  targets = np.stack([(train['label'] + m) % 10 for m in range(4)]).astype(np.int32)
  model = _model()

  def loss_fn(params, model_state, batch, rng):
    logits = model.apply({'params': params, **model_state}, batch['inputs'])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch['target']), ({}, {})

  config = _config(4, total_steps=150, mesh=(('data', 2), ('model', 4)))
  result = ensemble.train_ensemble(
      config, str(tmp_path), init_fn=lambda rng: model.init(rng, train['inputs'][:1]),
      loss_fn=loss_fn, arrays=train, model_arrays={'target': targets})
  predicted = ensemble.predict(result.state, model.apply, test['inputs']).argmax(-1)  # (4, N)
  agree = np.array([[np.mean(predicted[m] == (test['label'] + s) % 10) for s in range(4)]
                    for m in range(4)])
  assert np.all(np.argmax(agree, 1) == np.arange(4)) and np.all(np.diag(agree) > 0.5), agree
  with pytest.raises(ensemble.EnsembleError, match=r"model_arrays\['target'\] has shape \(4, 10\)"):
    ensemble.train_ensemble(config, str(tmp_path / 'bad'), init_fn=None, loss_fn=loss_fn,
                            arrays=train, model_arrays={'target': targets[:, :10]})
  with pytest.raises(ensemble.EnsembleError, match='would shadow'):
    ensemble.train_ensemble(config, str(tmp_path / 'bad'), init_fn=None, loss_fn=loss_fn,
                            arrays=train, model_arrays={'label': targets})


def test_chunk_choice_follows_backend_cost_and_convolutions(digits):
  train, _ = digits
  mlp = _model()  # 64 -> 16 -> 10 at batch 32: forward 2 * 32 * (64*16 + 16*10) FLOPs
  flops, conv = ensemble.step_cost(
      _per_example_loss(mlp), optax.adam(1e-3), lambda r: mlp.init(r, train['inputs'][:1]),
      {'inputs': jax.ShapeDtypeStruct((32, 64), jnp.float32),
       'label': jax.ShapeDtypeStruct((32,), jnp.int32)})
  forward = 2 * 32 * (64 * 16 + 16 * 10)
  # Forward, kernel gradients, the hidden layer's input gradient, and init's one-example forward.
  assert not conv and flops == 2 * forward + 2 * 32 * 16 * 10 + forward / 32
  resnet = models.build({'name': 'resnet', 'ndim': 1, 'width': 8, 'stage_sizes': (1,)}, 10)
  _, conv = ensemble.step_cost(
      _per_example_loss(resnet), optax.adam(1e-3),
      lambda r: resnet.init(r, jnp.zeros((1, 40, 1))),
      {'inputs': jax.ShapeDtypeStruct((32, 40, 1), jnp.float32),
       'label': jax.ShapeDtypeStruct((32,), jnp.int32)})
  assert conv
  assert ensemble.choose_chunk(256, 1e6, False, 'cpu') == ensemble.MAX_CHUNK
  assert ensemble.choose_chunk(256, 6.5e7, False, 'cpu') == 2
  assert ensemble.choose_chunk(256, 1e6, True, 'cpu') == 1
  assert ensemble.choose_chunk(16, 1e6, False, 'cpu') == 16
  assert ensemble.choose_chunk(84, 1e6, False, 'cpu') == 42  # a divisor: one compiled step
  assert ensemble.choose_chunk(256, 6.5e7, True, 'gpu') == 256


def test_resume_continues_the_ensemble_and_refuses_another(digits, tmp_path):
  train, _ = digits
  masks = _masks(4, len(train['label']))
  four = dict(mesh=(('data', 4), ('model', 2)))  # two models per device
  straight = _train(_config(4, **four), tmp_path / 'a', train, masks)
  for name in ('b', 'c'):
    shutil.copytree(tmp_path / 'a', tmp_path / name)
    shutil.rmtree(tmp_path / name / 'checkpoints' / '40')  # as if killed after step 20
  resumed = _train(_config(4, **four), tmp_path / 'b', train, masks)
  assert resumed.resumed_from == 20
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, straight.state.params),
               jax.tree.map(np.asarray, resumed.state.params))
  # The chunking may change on resume (two dispatches of one model per device instead of one of
  # two): the same models (on CPU bit for bit, tests/common/test_ensemble_chunks.py).
  rechunked = _train(_config(4, **four, **{'ensemble.chunk_size': 1}), tmp_path / 'c', train,
                     masks)
  assert rechunked.resumed_from == 20
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               jax.tree.map(np.asarray, straight.state.params),
               jax.tree.map(np.asarray, rechunked.state.params))
  with pytest.raises(ckpt_lib.CheckpointMismatchError, match='data.weights'):
    _train(_config(4, **four), tmp_path / 'a', train, _masks(4, len(train['label']), seed=1))


def test_bad_input_fails_before_compute(digits, tmp_path):
  train, _ = digits
  n = len(train['label'])
  with pytest.raises(config_lib.ConfigError, match='num_models=6 does not divide over the 8-way'):
    _train(_config(6), tmp_path, train)
  with pytest.raises(ensemble.EnsembleError, match=r'shape \(8, 10\); expected .*\(8, 1497\)'):
    _train(_config(), tmp_path, train, weights=np.ones((8, 10)))
  masks = _masks(8, n)
  masks[3] = False
  with pytest.raises(ensemble.EnsembleError, match=r'1 model\(s\) see no example.*\[3\]'):
    _train(_config(), tmp_path, train, masks)
  with pytest.raises(ensemble.EnsembleError, match='fewer examples than batch_size'):
    _train(_config(), tmp_path, train, _masks(8, n, fraction=0.01))
  with pytest.raises(config_lib.ConfigError, match='num_models=0'):
    _train(_config(0), tmp_path, train)
  # A per-model parameter sharding is not built by the ensemble: refused, not ignored.
  with pytest.raises(config_lib.ConfigError, match="sharding='fsdp': common.ensemble does not"):
    _train(_config(sharding='fsdp'), tmp_path, train)
  with pytest.raises(config_lib.ConfigError, match='sharding_rules=.*leave sharding_rules empty'):
    _train(_config(sharding_rules=(('embed', 'data'),)), tmp_path, train)
  with pytest.raises(ensemble.EnsembleError, match='class ids'):
    ensemble.correctness(np.zeros((2, 3, 4)), np.zeros(3, np.float32))
  assert not (tmp_path / 'checkpoints').exists()

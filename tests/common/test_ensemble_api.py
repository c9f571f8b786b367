"""train_ensemble's per-model inputs: starting parameters, the model index and per-model scalars
in the loss, a shared batch order; labels checked before compute; NaN inputs named as such."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from common import config_lib
from common import ensemble
from common import models
from common import train as train_lib
from common.data import loader
from configs.common import loop as loop_config

ONE_DEVICE = (('data', 1), ('model', 1))


@pytest.fixture(scope='module')
def digits():
  train = loader.load('digits', 'train[:256]')
  return {'inputs': np.asarray(train['inputs'], np.float32),
          'label': np.asarray(train['label'], np.int32)}


def _config(num_models, steps=6, chunk=0, mesh=ONE_DEVICE, **overrides):
  config = loop_config.get_config(
      batch_size=16, total_steps=steps, log_every_steps=1000, checkpoint_every_steps=1000,
      mesh=mesh, num_devices=int(np.prod([s for _, s in mesh])),
      optimizer=loop_config.optimizer(learning_rate=3e-3))
  config.ensemble = loop_config.ensemble(num_models, chunk_size=chunk)
  return config_lib.set_fields(config, **overrides)


def _mlp():
  return models.build({'name': 'mlp', 'widths': (8,)}, 10)


def _ce_loss(model):
  def loss_fn(params, model_state, batch, rng):
    del rng
    logits = model.apply({'params': params, **model_state}, batch['inputs'])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch['label']), ({}, {})
  return loss_fn


def _numpy(tree):
  return jax.tree.map(np.array, nn.meta.unbox(tree))


# ---------------------------------------------------------------------------------------------
# init_params
# ---------------------------------------------------------------------------------------------
def test_models_started_from_given_params_reproduce_a_run(digits, tmp_path):
  model = _mlp()
  init_fn = lambda rng: model.init(rng, digits['inputs'][:1])
  run = ensemble.train_ensemble(_config(4), str(tmp_path / 'run'), init_fn=init_fn,
                                loss_fn=_ce_loss(model), arrays=digits)
  # The starts train_ensemble draws: model m from fold_in(key(seed), m).
  keys = jax.vmap(lambda m: jax.random.fold_in(jax.random.key(0), m))(jnp.arange(4))
  starts = _numpy(jax.vmap(init_fn)(keys)['params'])
  again = ensemble.train_ensemble(_config(4), str(tmp_path / 'again'), init_fn=None,
                                  loss_fn=_ce_loss(model), arrays=digits, init_params=starts)
  jax.tree.map(np.testing.assert_array_equal, _numpy(run.state.params),
               _numpy(again.state.params))
  # Rows swapped and a learning rate of 0: model m holds row m of what it was given.
  swapped = jax.tree.map(lambda a: a[[1, 0, 3, 2]], starts)
  held = ensemble.train_ensemble(_config(4, steps=1), str(tmp_path / 'held'), init_fn=init_fn,
                                 loss_fn=_ce_loss(model), arrays=digits, init_params=swapped,
                                 tx=optax.sgd(0.0))
  jax.tree.map(np.testing.assert_array_equal, swapped, _numpy(held.state.params))


def test_init_params_of_another_shape_or_count_are_refused_before_compute(digits, tmp_path):
  model = _mlp()
  init_fn = lambda rng: model.init(rng, digits['inputs'][:1])
  params = _numpy(jax.vmap(init_fn)(jax.random.split(jax.random.key(0), 4))['params'])
  with pytest.raises(ensemble.EnsembleError, match=r"init_params\['hidden_0'\]\['bias'\] has "
                     r'shape \(3, 8\); expected \(num_models, \.\.\.\) with num_models=4'):
    ensemble.train_ensemble(_config(4), str(tmp_path), init_fn=None, loss_fn=_ce_loss(model),
                            arrays=digits, init_params=jax.tree.map(lambda a: a[:3], params))
  wide = _numpy(jax.vmap(lambda r: _mlp().clone(widths=(9,)).init(r, digits['inputs'][:1]))(
      jax.random.split(jax.random.key(0), 4))['params'])
  with pytest.raises(ensemble.EnsembleError, match=r"(?s)do not match .*'hidden_0'.*\(9,\)"):
    ensemble.train_ensemble(_config(4), str(tmp_path), init_fn=init_fn, loss_fn=_ce_loss(model),
                            arrays=digits, init_params=wide)
  params['readout']['bias'][2, 0] = np.nan
  with pytest.raises(ensemble.EnsembleError, match=r'not finite for models \[2\]'):
    ensemble.train_ensemble(_config(4), str(tmp_path), init_fn=None, loss_fn=_ce_loss(model),
                            arrays=digits, init_params=params)
  assert not (tmp_path / 'checkpoints').exists()


# ---------------------------------------------------------------------------------------------
# The model index, the step and per-model scalars in the loss.
# ---------------------------------------------------------------------------------------------
def _target_loss(params, model_state, batch, rng):
  """(w - target)^2 per example, target = m + alpha_m + 10 * step: one SGD step of rate 1/2
  lands w on the target exactly."""
  del rng
  own = batch['model']
  target = own['index'].astype(jnp.float32) + own['alpha'] + 10.0 * own['step']
  size = batch['x'].shape[0]
  return jnp.broadcast_to((params['w'] - target) ** 2, (size,)), ({}, model_state)


@pytest.mark.parametrize('num_models,chunk,mesh', [
    (4, 1, ONE_DEVICE), (4, 2, ONE_DEVICE), (4, 4, ONE_DEVICE),
    (8, 1, (('data', 2), ('model', 4)))])
def test_the_loss_sees_its_own_model_index_scalars_and_step_for_every_chunk(tmp_path, num_models,
                                                                           chunk, mesh):
  alpha = np.linspace(0.25, 0.75, num_models).astype(np.float32)
  result = ensemble.train_ensemble(
      _config(num_models, steps=2, chunk=chunk, mesh=mesh), str(tmp_path),
      init_fn=lambda rng: {'params': {'w': jnp.zeros(())}}, loss_fn=_target_loss,
      arrays={'x': np.zeros((32, 1), np.float32)}, model_scalars={'alpha': alpha},
      tx=optax.sgd(0.5))
  # After step 0 w = m + alpha_m; step 1 moves it to m + alpha_m + 10.
  np.testing.assert_allclose(np.asarray(result.state.params['w']),
                             np.arange(num_models) + alpha + 10.0, rtol=1e-6)


def test_bad_model_scalars_are_refused_before_compute(tmp_path):
  run = lambda scalars: ensemble.train_ensemble(
      _config(4), str(tmp_path), init_fn=lambda rng: {'params': {'w': jnp.zeros(())}},
      loss_fn=_target_loss, arrays={'x': np.zeros((32, 1), np.float32)}, model_scalars=scalars)
  with pytest.raises(ensemble.EnsembleError, match=r"model_scalars\['alpha'\] has shape \(3,\); "
                     r'expected \(num_models,\) = \(4,\)'):
    run({'alpha': np.zeros(3)})
  with pytest.raises(ensemble.EnsembleError, match=r"model_scalars\['index'\]: the name is "
                     'reserved'):
    run({'index': np.zeros(4)})
  with pytest.raises(ensemble.EnsembleError, match=r'not finite for models \[1\]'):
    run({'alpha': np.array([0.0, np.inf, 0.0, 0.0])})
  with pytest.raises(ensemble.EnsembleError, match=r"arrays\['model'\]: the name is reserved"):
    ensemble.train_ensemble(_config(4), str(tmp_path), init_fn=None, loss_fn=_target_loss,
                            arrays={'model': np.zeros(32)})
  assert not (tmp_path / 'checkpoints').exists()


# ---------------------------------------------------------------------------------------------
# A shared batch order.
# ---------------------------------------------------------------------------------------------
def test_with_a_shared_order_identical_models_train_identically(digits, tmp_path):
  model = _mlp()
  one = _numpy(model.init(jax.random.key(3), digits['inputs'][:1])['params'])
  same = jax.tree.map(lambda a: np.stack([a, a]), one)
  runs = {shared: _numpy(ensemble.train_ensemble(
      _config(2), str(tmp_path / str(shared)), init_fn=None, loss_fn=_ce_loss(model),
      arrays=digits, init_params=same, shared_order=shared).state.params)
          for shared in (True, False)}
  jax.tree.map(lambda a: np.testing.assert_array_equal(a[0], a[1]), runs[True])
  assert not np.array_equal(runs[False]['readout']['kernel'][0],
                            runs[False]['readout']['kernel'][1])  # own orders: they differ


def test_a_shared_order_needs_one_support_and_gives_every_model_the_same_batches():
  weights = np.ones((3, 40), np.float32)
  weights[1] *= 2.0  # other values, same support: allowed
  order = ensemble.EnsembleOrder(weights, 8, seed=0, shared=True)
  for k in (0, 4, 5, 11):  # across epochs
    rows = order.indices(k)
    assert (rows == rows[0]).all() and len(set(rows[0].tolist())) == 8
  weights[2, 5] = 0.0
  with pytest.raises(ensemble.EnsembleError, match='shared_order needs the models that share an '
                     'order to see the same examples; model 2'):
    ensemble.EnsembleOrder(weights, 8, seed=0, shared=True)


def test_order_groups_pair_the_models_of_a_group_and_keep_groups_independent():
  """A seed's arms share batches (paired); the seeds draw independent orders (replicates)."""
  weights = np.ones((4, 40), np.float32)
  grouped = ensemble.EnsembleOrder(weights, 8, seed=0, shared=(0, 0, 1, 1))
  own = ensemble.EnsembleOrder(weights, 8, seed=0, shared=False)
  for k in (0, 5, 11):
    rows = grouped.indices(k)
    assert (rows[0] == rows[1]).all() and (rows[2] == rows[3]).all()
    assert not (rows[0] == rows[2]).all()
    # each group draws its first model's own order: the same as without sharing
    np.testing.assert_array_equal(rows[[0, 2]], own.indices(k)[[0, 2]])
  weights[3, 5] = 0.0   # a group whose models see different examples
  with pytest.raises(ensemble.EnsembleError,
                     match=r'model 3 sees 39 where model 2 \(its group.s first\)'):
    ensemble.EnsembleOrder(weights, 8, seed=0, shared=(0, 0, 1, 1))
  with pytest.raises(ensemble.EnsembleError, match='4 integer group ids'):
    ensemble.EnsembleOrder(np.ones((4, 40)), 8, seed=0, shared=(0, 1))


# ---------------------------------------------------------------------------------------------
# Labels and non-finite inputs.
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize('bad', [10, -1])
def test_labels_outside_the_classes_are_refused_before_compute(digits, tmp_path, bad):
  model = _mlp()
  arrays = dict(digits, label=digits['label'].copy())
  arrays['label'][7] = bad
  with pytest.raises(ensemble.EnsembleError, match=rf"arrays\['label'\] holds 1 label\(s\) outside "
                     rf'\[0, num_classes=10\) \(example 7: {bad}'):
    ensemble.train_ensemble(_config(4), str(tmp_path), init_fn=None, loss_fn=_ce_loss(model),
                            arrays=arrays, num_classes=10)
  with pytest.raises(ensemble.EnsembleError, match='must be integer class ids'):
    ensemble.train_ensemble(_config(4), str(tmp_path), init_fn=None, loss_fn=_ce_loss(model),
                            arrays=dict(digits, label=digits['label'] * 1.0), num_classes=10)
  assert not (tmp_path / 'checkpoints').exists()


def _linear_loss(params, model_state, batch, rng):
  del rng
  return (batch['x'][:, 0] * params['w'] - 1.0) ** 2, ({}, model_state)


def test_a_nan_stop_names_the_nan_inputs_instead_of_the_learning_rate(tmp_path):
  x = np.ones((32, 1), np.float32)
  x[0] = np.nan
  masks = np.ones((4, 32), bool)
  masks[:, 0] = False
  masks[2, 0] = True  # only model 2 sees the NaN example
  with pytest.raises(train_lib.NonFiniteLossError) as error:
    ensemble.train_ensemble(_config(4, steps=4, batch_size=31), str(tmp_path),
                            init_fn=lambda rng: {'params': {'w': jnp.zeros(())}},
                            loss_fn=_linear_loss, arrays={'x': x}, weights=masks)
  message = str(error.value)
  assert r"1 model(s) ([2])" in message
  assert "arrays['x'] holds NaN/inf in 1 example(s) these models see ([0])" in message
  assert 'learning rate is not the cause' in message and 'Lower the learning rate' not in message


def test_a_nan_stop_on_finite_inputs_still_advises_the_learning_rate(tmp_path):
  with pytest.raises(train_lib.NonFiniteLossError, match='Lower the learning rate'):
    ensemble.train_ensemble(_config(4, steps=4), str(tmp_path),
                            init_fn=lambda rng: {'params': {'w': jnp.zeros(())}},
                            loss_fn=_linear_loss, arrays={'x': np.ones((32, 1), np.float32)},
                            tx=optax.sgd(1e30))

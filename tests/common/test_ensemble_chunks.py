"""On CPU a model's result does not depend on how many models share a dispatch: bit for bit, for
an MLP and the 1-D and 2-D ResNets, on one device and on a mesh; where the step batches its
models (accelerators), another chunk on resume is refused, naming the field."""

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from common import checkpoint as ckpt_lib
from common import config_lib
from common import ensemble
from common import ensemble_step
from common import mesh as mesh_lib
from common import models
from common.data import loader
from configs.common import loop as loop_config

ONE_DEVICE = (('data', 1), ('model', 1))


@pytest.fixture(scope='module')
def digits():
  train = loader.load('digits', 'train[:256]')
  return {'inputs': np.asarray(train['inputs'], np.float32),
          'label': np.asarray(train['label'], np.int32)}


def _config(num_models, chunk, steps=8, **overrides):
  config = loop_config.get_config(batch_size=16, total_steps=steps, log_every_steps=4,
                                  checkpoint_every_steps=4, mesh=ONE_DEVICE, num_devices=1,
                                  optimizer=loop_config.optimizer(learning_rate=3e-3))
  config.ensemble = loop_config.ensemble(num_models, chunk_size=chunk)
  return config_lib.set_fields(config, **overrides)


def _loss(model):
  def loss_fn(params, model_state, batch, rng):
    del rng
    logits = model.apply({'params': params, **model_state}, batch['inputs'])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch['label']), ({}, {})
  return loss_fn


def _params(config, workdir, model, arrays, masks=None):
  result = ensemble.train_ensemble(
      config, str(workdir), init_fn=lambda rng: model.init(rng, arrays['inputs'][:1]),
      loss_fn=_loss(model), arrays=arrays, weights=masks)
  return jax.tree.map(np.asarray, result.state.params)


def _assert_identical(ref, other):
  jax.tree.map(np.testing.assert_array_equal, ref, other)


def _masks(num_models, n, seed=0):
  rng = np.random.default_rng(seed)
  return np.stack([rng.random(n) < 0.7 for _ in range(num_models)])


@pytest.mark.parametrize('impl', ['rbg', 'unsafe_rbg'])
def test_the_chunk_changes_nothing_under_the_rbg_prngs(digits, tmp_path, impl):
  """memorisation runs under 'rbg', whose batched random bits differ from unbatched ones: a vmap
  over a dispatch's models once made each model's initial weights depend on the chunk
  (`memorisation --config.chunk_target=4` then gave other numbers than the default)."""
  model = models.build({'name': 'mlp', 'widths': (16,)}, 10)
  old = jax.config.jax_default_prng_impl
  jax.config.update('jax_default_prng_impl', impl)
  try:
    runs = {chunk: _params(_config(4, chunk, steps=4), tmp_path / str(chunk), model, digits)
            for chunk in (1, 4)}
  finally:
    jax.config.update('jax_default_prng_impl', old)
  _assert_identical(runs[4], runs[1])


CASES = {  # model, one input's shape, the chunks compared (4: all the models)
    'mlp': ({'name': 'mlp', 'widths': (16,)}, (64,), (1, 2, 4)),
    'resnet1d': ({'name': 'resnet', 'ndim': 1, 'width': 4, 'stage_sizes': (1,)}, (64, 1),
                 (1, 4)),
    'resnet2d': ({'name': 'resnet', 'ndim': 2, 'width': 4, 'stage_sizes': (1,)}, (8, 8, 1),
                 (1, 2, 4)),
}


@pytest.mark.parametrize('name', ['mlp', 'resnet1d',
                                  pytest.param('resnet2d', marks=pytest.mark.slow)])
def test_a_models_params_are_bit_identical_for_chunks_of_one_two_and_all(digits, tmp_path, name):
  model_config, shape, chunks = CASES[name]
  model = models.build(model_config, 10)
  arrays = dict(digits, inputs=digits['inputs'].reshape((-1,) + shape))
  masks = _masks(4, len(arrays['label']))
  runs = {chunk: _params(_config(4, chunk), tmp_path / str(chunk), model, arrays, masks=masks)
          for chunk in chunks}
  for chunk in chunks[:-1]:
    _assert_identical(runs[chunks[-1]], runs[chunk])


def test_chunks_are_bit_identical_with_the_models_spread_over_a_mesh(digits, tmp_path):
  """Eight models over a 4-way model axis and a 2-way data axis: one or two per device."""
  model = models.build(CASES['mlp'][0], 10)
  mesh = (('data', 2), ('model', 4))
  one = _params(_config(8, 1, mesh=mesh, num_devices=8), tmp_path / 'one', model, digits)
  two = _params(_config(8, 2, mesh=mesh, num_devices=8), tmp_path / 'two', model, digits)
  _assert_identical(one, two)


def test_a_resume_under_another_chunk_continues_bit_for_bit(digits, tmp_path):
  model = models.build(CASES['mlp'][0], 10)
  straight = _params(_config(4, 4), tmp_path / 'a', model, digits)
  shutil.copytree(tmp_path / 'a', tmp_path / 'b')
  shutil.rmtree(tmp_path / 'b' / 'checkpoints' / '8')  # as if killed after step 4
  resumed = ensemble.train_ensemble(
      _config(4, 1), str(tmp_path / 'b'), init_fn=lambda r: model.init(r, digits['inputs'][:1]),
      loss_fn=_loss(model), arrays=digits)
  assert resumed.resumed_from == 4
  _assert_identical(straight, jax.tree.map(np.asarray, resumed.state.params))


def test_where_models_are_batched_another_chunk_on_resume_is_refused(digits, tmp_path,
                                                                      monkeypatch):
  """As on an accelerator: the vmapped step's rounding depends on the chunk."""
  monkeypatch.setattr(ensemble_step, 'models_batched', lambda backend=None: True)
  model = models.build(CASES['mlp'][0], 10)
  _params(_config(4, 2), tmp_path, model, digits)
  shutil.rmtree(tmp_path / 'checkpoints' / '8')
  with pytest.raises(ckpt_lib.CheckpointMismatchError,
                     match=r'ensemble\.models_per_dispatch: checkpoint 2, now 1'):
    _params(_config(4, 1), tmp_path, model, digits)
  assert _params(_config(4, 2), tmp_path, model, digits) is not None  # the same chunk resumes


def _conv_stack(num_models):
  """A dispatch's arguments for `num_models` small 2-D ResNets, stacked, and their update."""
  model = models.build({'name': 'resnet', 'ndim': 2, 'width': 8, 'stage_sizes': (1, 1),
                        'norm': 'batch'}, 10)
  x = np.random.default_rng(0).normal(size=(num_models, 16, 8, 8, 3)).astype(np.float32)
  y = np.random.default_rng(1).integers(0, 10, size=(num_models, 16)).astype(np.int32)
  tx = optax.adam(1e-3)
  init = lambda r: ensemble_step.init_one(lambda k: model.init(k, x[0, :1], train=False), tx, r)
  params, opt_state, model_state = jax.vmap(init)(jax.random.split(jax.random.key(0), num_models))

  def loss_fn(p, state, batch, rng):
    del rng
    logits, new_state = model.apply({'params': p, **state}, batch['inputs'], train=True,
                                    mutable=list(state))
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch['label'])
    return losses, ({}, dict(new_state))

  args = (params, opt_state, model_state, {'inputs': x, 'label': y},
          np.ones((num_models, 16), np.float32), jax.random.split(jax.random.key(1), num_models))
  return ensemble_step.update_one(loss_fn, tx), args


def test_batched_models_on_a_model_axis_run_on_their_own_devices_without_gathering_them():
  """Accelerators batch a dispatch's models (vmap); with the stack split over the model axis,
  a plain vmap let XLA gather every model's parameters onto every device (an all-gather per
  convolution). Each device now runs only its own models, and the numbers are the map's."""
  n = jax.device_count()
  if n < 2:
    pytest.skip('needs several (fake) devices')
  mesh = mesh_lib.make_mesh((('data', 1), ('model', n)), jax.devices())
  update, args = _conv_stack(n)
  on_models = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('model'))
  args = jax.device_put(args, on_models)
  with jax.set_mesh(mesh):
    batched = jax.jit(lambda a: ensemble_step._each_model(update, 'model', batched=True)(a))  # pylint: disable=protected-access
    hlo = batched.lower(args).compile().as_text()
    assert 'all-gather' not in hlo
    mapped = jax.jit(lambda a: ensemble_step._each_model(update, 'model', batched=False)(a))  # pylint: disable=protected-access
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6),
                 mapped(args)[0], batched(args)[0])


def test_predict_runs_each_device_on_its_own_models():
  n = jax.device_count()
  if n < 2:
    pytest.skip('needs several (fake) devices')
  mesh = mesh_lib.make_mesh((('data', 1), ('model', n)), jax.devices())
  model = models.build({'name': 'mlp', 'widths': (16,)}, 10)
  params = jax.vmap(lambda r: model.init(r, jnp.zeros((1, 8)))['params'])(
      jax.random.split(jax.random.key(0), n))
  on_models = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('model'))
  state = ensemble_step.EnsembleState(step=0, params=jax.device_put(params, on_models),
                                      opt_state=None, model_state={}, nonfinite_step=None)
  x = np.random.default_rng(0).normal(size=(20, 8)).astype(np.float32)
  out = ensemble.predict(state, lambda v, inputs: model.apply(v, inputs), x, batch_size=8)
  expected = np.stack([np.asarray(model.apply({'params': jax.tree.map(lambda a: a[m], params)}, x))
                       for m in range(n)])
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)

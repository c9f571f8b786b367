"""IWeS at accelerator sizes: the models' predictions split over the model axis (each device runs
its own models), grouped like the training step's dispatches; the round's per-device memory
estimate (iwes.memory); the CIFAR variants' dispatch and rehearsal."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from common import config_lib
from common import ensemble
from common import ensemble_step
from common import mesh as mesh_lib
from common import models
from common import rehearsal
from configs.iwes import mnist1d as iwes_config
from iwes import experiment
from iwes import memory
from iwes import selection

P = jax.sharding.PartitionSpec
# A small convolutional model: XLA splits a vmap of dense layers over the model axis, not one of
# convolutions.
RESNET = {'name': 'resnet', 'ndim': 2, 'width': 4, 'stage_sizes': (1,), 'norm': 'batch'}


def _result(num_models=16, seed=0):
  """An EnsembleResult of `num_models` small ResNets (different initialisations) over the
  8 fake devices' model axis."""
  model = models.build(ml_collections.ConfigDict(RESNET), 3)
  mesh = mesh_lib.make_mesh((('data', 1), ('model', -1)))
  rngs = jax.random.split(jax.random.key(seed), num_models)
  variables = jax.vmap(lambda r: model.init(r, jnp.zeros((1, 8, 8, 1)), train=False))(rngs)
  variables = jax.device_put(variables, jax.sharding.NamedSharding(mesh, P('model')))
  state = ensemble_step.EnsembleState(
      step=jnp.zeros((), jnp.int32), params=variables['params'], opt_state=(),
      model_state={k: v for k, v in variables.items() if k != 'params'},
      nonfinite_step=jnp.full((num_models,), -1, jnp.int32))
  result = ensemble.EnsembleResult(state=state, history=[], mesh=mesh, num_models=num_models,
                                   total_steps=0, resumed_from=None)
  return model, variables, result


@pytest.mark.parametrize('ids,chunk_size', [
    (range(16), 0), (range(16), 1), ([3, 5, 11], 0), ([15, 0, 7, 8, 9], 1)])
def test_predict_gives_each_models_own_outputs_in_the_order_asked(ids, chunk_size):
  model, variables, result = _result()
  inputs = np.random.default_rng(0).normal(size=(37, 8, 8, 1)).astype(np.float32)
  apply = lambda v, x: model.apply(v, x, train=False)
  out = selection.predict(result, apply, inputs, ids, chunk_size, batch_size=16)
  assert out.shape == (len(list(ids)), 37, 3)
  for row, m in zip(out, ids):
    one = jax.tree.map(lambda a, m=m: np.asarray(a[m]), variables)
    np.testing.assert_allclose(row, apply(one, inputs), rtol=1e-5, atol=1e-5)


def test_each_device_runs_only_its_own_models_when_predicting():
  """A plain jit of the vmap (ensemble.predict's program) gathers every model's parameters on
  every device and runs all of them there: 336 ResNet-18s over 8 devices needed 288 GiB each."""
  model, variables, result = _result()
  apply = lambda v, x: model.apply(v, x, train=False)
  x = jax.ShapeDtypeStruct((64, 8, 8, 1), jnp.float32,
                           sharding=jax.sharding.NamedSharding(result.mesh, P()))
  with jax.set_mesh(result.mesh):
    plain = jax.jit(jax.vmap(apply, in_axes=(0, None))).lower(variables, x).compile()
    split = selection.predict_program(apply, result.mesh).lower(variables, x).compile()
  assert 'all-gather' in plain.as_text()  # why iwes does not use it
  assert 'all-gather' not in split.as_text()
  assert (split.memory_analysis().temp_size_in_bytes
          < plain.memory_analysis().temp_size_in_bytes / 4)


def _tiny_with_models(methods, seeds, chunk_size):
  config = iwes_config.get_config('tiny')
  with config.unlocked():
    config.method_names = methods
    config.seeds = seeds
    config.chunk_size = chunk_size
  return config


def test_the_round_estimate_holds_every_model_a_device_trains():
  # tiny: digits MLP(64) on 8 x 8 x 1 inputs, 10 classes: 64 x 64 + 64 + 64 x 10 + 10 = 4,810
  # parameters; 4 methods x 2 seeds x (f, g) = 16 models, 2 per device of the 8.
  config = _tiny_with_models(('uniform', 'margin', 'kcenter', 'iwes_dis_w5'), 2, 1)
  spec = ml_collections.ConfigDict({'dataset': 'digits', 'num_examples': 1_197,
                                    'input_shape': (8, 8, 1), 'num_classes': 10})
  estimate = memory.selection_step(config, spec)
  assert estimate.params == 2 * 4_810 * 4
  assert estimate.optimizer >= 2 * estimate.params  # Adam's two moments of each model
  # The pool on every device, inputs and labels.
  assert estimate.other_arguments >= 1_197 * (64 + 1) * 4
  assert 'dispatches of 1' in estimate.note and '16 models' in estimate.note
  whole = memory.selection_step(_tiny_with_models(config.method_names, 2, 0), spec)
  assert 'dispatches of 2' in whole.note and whole.params == estimate.params


def test_models_that_do_not_divide_over_the_model_axis_are_refused():
  config = _tiny_with_models(('uniform', 'margin', 'kcenter'), 1, 1)  # 6 models on 8 devices
  spec = ml_collections.ConfigDict({'dataset': 'digits', 'num_examples': 1_197,
                                    'input_shape': (8, 8, 1), 'num_classes': 10})
  with pytest.raises(config_lib.ConfigError,
                     match=r'6 models \(2 x methods x seeds\) do not divide over the 8-way'):
    memory.selection_step(config, spec)


@pytest.mark.parametrize('variant', ['cifar10', 'cifar100'])
def test_the_cifar_variants_train_one_model_per_device_per_dispatch(variant):
  """chunk_size 0 would vmap all 42 of a device's 336 / 8 ResNet-18s at once (472 GiB per
  device by the estimate)."""
  config = iwes_config.get_config(variant)
  assert config.chunk_size == 1
  assert config.rehearsal.memory.step == 'iwes.memory:selection_step'
  assert memory.dispatch(2 * len(config.method_names) * config.seeds, 8, config.chunk_size) == (
      42, 1)


@pytest.mark.parametrize('variant', ['cifar10', 'cifar100'])
def test_the_rehearsal_fits_its_mock_data_and_the_fake_devices(variant):
  """Under mock data every split is the rehearsal's mock_examples: the pool must hold the label
  budget, and the models must divide over the 8 fake devices' model axis."""
  config = iwes_config.get_config(variant)
  shrunk = rehearsal.apply(config)
  experiment.check_config(shrunk)
  ds = shrunk.datasets[variant]
  assert ds.budget <= config.rehearsal.mock_examples
  assert (2 * len(shrunk.method_names) * shrunk.seeds) % 8 == 0
  # Only sizes shrink: the model, the loop's mesh and optimizer are the variant's own.
  real = config.datasets[variant]
  assert ds.model == real.model and ds.loop.mesh == real.loop.mesh
  assert ds.loop.optimizer.name == real.loop.optimizer.name
  assert shrunk.chunk_size == config.chunk_size


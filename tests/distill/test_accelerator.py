"""The cifar100 (accelerator) variant's memory: its ensembles split over the mesh's model axis, the
evaluation dispatches bounded, the teachers' state let go before the students train (a host copy
of the teacher stack), and the per-device estimate of the students' step with that stack."""

import gc
import types
import weakref

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import scipy.special

from common import ensemble
from common import models
from configs.distill import mnist1d as distill_config
from distill import experiment
from distill import memory as distill_memory
from distill import training

MLP = ml_collections.ConfigDict({'name': 'mlp', 'widths': (8,)})


def _stacked_state(model, num_models, x0):
  variables = jax.vmap(lambda r: model.init(r, x0, train=False))(
      jax.random.split(jax.random.key(0), num_models))
  return ensemble.EnsembleState(
      step=jnp.zeros((), jnp.int32), params=variables['params'], opt_state=(),
      model_state={k: v for k, v in variables.items() if k != 'params'},
      nonfinite_step=jnp.full((num_models,), -1, jnp.int32))


def test_the_cifar100_variants_teachers_each_live_on_one_device_not_on_all_eight(tmp_path):
  # The variant's own loop (mesh included) trains its 8 teachers; a tiny model stands in for the
  # ResNet. With a 1-way model axis every device held all 8 models' parameters and optimizer state.
  config = distill_config.get_config('cifar100')
  assert len(jax.devices()) == 8
  loop = experiment._loop(config, config.datasets.cifar100, 1, 0)  # pylint: disable=protected-access
  loop.batch_size = 8
  rng = np.random.default_rng(0)
  arrays = {'inputs': rng.normal(size=(16, 4, 1)).astype(np.float32),
            'label': rng.integers(0, 3, 16).astype(np.int32)}
  _, result = training.train(loop, str(tmp_path), model_config=MLP, num_models=config.seeds,
                             arrays=arrays, num_classes=3)
  for tree in (result.state.params, result.state.opt_state):
    for leaf in jax.tree.leaves(tree):
      if leaf.ndim:
        assert {s.data.shape[0] for s in leaf.addressable_shards} == {config.seeds // 8}


def test_probabilities_bound_the_model_examples_of_each_dispatch(monkeypatch):
  model = models.build(MLP, 5)
  x = np.random.default_rng(1).normal(size=(40, 6, 1)).astype(np.float32)
  state = _stacked_state(model, 3, x[:1])
  p = training.probabilities(model, state, x)
  for m in range(3):  # every model on every input, whatever the batch
    one = jax.tree.map(lambda a, m=m: a[m], {'params': state.params, **state.model_state})
    expected = scipy.special.softmax(np.asarray(model.apply(one, x, train=False), np.float64), -1)
    np.testing.assert_allclose(p[m], expected, rtol=1e-5, atol=1e-6)
  # At 24 models (the cifar100 students) a dispatch of 1,024 examples needed ~20 GiB of
  # temporaries per device; the default batch keeps models x batch within the budget.
  seen = []
  monkeypatch.setattr(ensemble, 'predict',
                      lambda state, fn, inputs, batch_size: seen.append(batch_size) or
                      np.zeros((24, len(inputs), 5), np.float32))
  training.probabilities(model, types.SimpleNamespace(nonfinite_step=np.zeros(24)), x)
  assert seen == [training.EVAL_MODEL_EXAMPLES // 24]


def test_run_regime_lets_the_teachers_state_go_before_the_students_train(monkeypatch):
  # While the students train, the teachers are the host copy of their variables in the Teacher:
  # their optimizer state and their parameters on the devices are freed.
  config = distill_config.get_config('tiny')
  seeds = config.seeds
  model = models.build(config.datasets.digits.model, 10)
  refs, held_while_students_train = {}, []

  def fake_train(loop, workdir, *, num_models, teacher=None, **kwargs):
    del loop, workdir, kwargs
    x0 = jnp.zeros((1, 8, 8, 1))
    state = _stacked_state(model, num_models, x0)
    state = state.replace(opt_state=jnp.ones((num_models, 1000)))
    if teacher is None:
      refs['teachers'] = [weakref.ref(state.opt_state),
                          weakref.ref(jax.tree.leaves(state.params)[0])]
    else:
      gc.collect()
      held_while_students_train.append([r() is not None for r in refs['teachers']])
    return model, types.SimpleNamespace(state=state)

  def fake_probabilities(model, state, inputs):
    del model
    m = len(state.nonfinite_step)
    return np.full((m, len(inputs), 10), 0.1)

  monkeypatch.setattr(training, 'train', fake_train)
  monkeypatch.setattr(training, 'probabilities', fake_probabilities)
  rows = experiment.run_regime(config, 'digits', '/unused')
  assert len(rows) == seeds
  assert held_while_students_train == [[False, False]]


def test_the_student_estimate_adds_the_teacher_stack_to_the_ensemble_step(monkeypatch):
  config = distill_config.get_config('cifar100')
  spec = config.rehearsal.memory
  assert spec.step == 'distill.memory:student_step'
  asked = []

  def fake_step_memory(config, spec, devices=None):
    del config, devices
    asked.append((spec.step, spec.num_models, spec.num_examples))
    return distill_memory.memory.Estimate(params=1, optimizer=2, other_arguments=3, outputs=0,
                                          temporaries=4, devices=8, note='ensemble')

  monkeypatch.setattr(distill_memory.memory, 'step_memory', fake_step_memory)
  estimate = distill_memory.student_step(config, spec)
  assert asked == [('ensemble', 3 * config.seeds, 50_000)]
  # ResNet-18 on CIFAR-100: 11.2M parameters and 9,600 batch-norm values, float32, per teacher.
  per_teacher = distill_memory.teacher_stack_bytes(config.datasets.cifar100.model, (32, 32, 3),
                                                   100, 1)
  assert per_teacher == pytest.approx(4 * 11.23e6, rel=0.01)
  assert estimate.other_arguments == 3 + config.seeds * per_teacher
  assert 'stack of 8 teachers' in estimate.note


def test_a_teacher_stack_sharded_over_the_model_axis_is_its_own_host_copy():
  # The teachers' ensemble state is sharded over the model axis; indexing it eagerly (check,
  # fingerprint) ran a collective per variable, which on the 8 fake devices stalled past XLA's
  # 40 s rendezvous limit and aborted the rehearsal. The stack is copied once to the host, so the
  # teachers' state can also be let go.
  from distill.teacher import Teacher  # pylint: disable=g-import-not-at-top
  model = models.build(MLP, 5)
  x = np.random.default_rng(2).normal(size=(8, 6, 1)).astype(np.float32)
  mesh = jax.make_mesh((8,), ('model',), axis_types=(jax.sharding.AxisType.Auto,))
  on_models = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('model'))
  variables = jax.jit(jax.vmap(lambda r: model.init(r, x[:1], train=False)),
                      out_shardings=on_models)(jax.random.split(jax.random.key(0), 8))
  expected = [np.asarray(model.apply(jax.tree.map(lambda a, i=i: a[i], variables), x,
                                     train=False)) for i in range(8)]
  teacher = Teacher.from_models(model, variables, 5)
  for leaf in jax.tree.leaves(variables):
    leaf.delete()
  teacher.check(x, 5)
  traced = jax.jit(teacher.logits)
  for i in range(8):
    np.testing.assert_allclose(np.asarray(teacher.logits(x, i)), expected[i], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(traced(x, jnp.int32(i))), expected[i], rtol=1e-5)

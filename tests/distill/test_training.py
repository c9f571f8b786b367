"""The students' loss for common.ensemble: per-example shapes, late switching at the ensemble's
step, the teacher on the student's augmented inputs, a stack of teachers indexed per student,
teachers from checkpoints, and inputs refused before compute."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import distill
from common import models
from configs.common import loop as loop_config
from distill import training


def _model(widths=(8,), classes=4):
  return models.build(ml_collections.ConfigDict({'name': 'mlp', 'widths': widths}), classes)


def _batch(seed=0, b=16, length=12, classes=4, **own):
  rng = np.random.default_rng(seed)
  return {'inputs': rng.normal(size=(b, length, 1)).astype(np.float32),
          'label': rng.integers(0, classes, b).astype(np.int32),
          'model': {'index': 0, 'step': 0, **own}}


def _params(model, batch, seed=0):
  return model.init(jax.random.key(seed), batch['inputs'][:1], train=False)['params']


def test_random_shift_moves_each_example_and_fills_zeros():
  signal = np.arange(1.0, 11.0)
  x = jnp.asarray(signal)[None, :, None].repeat(64, 0)       # (64, 10, 1)
  out = np.asarray(training.random_shift(jax.random.key(0), x, 2)[..., 0])

  def shifted(s):  # out[i] = in[i + s], zeros from outside
    idx = np.arange(10) + s
    return np.where((idx >= 0) & (idx < 10), signal[np.clip(idx, 0, 9)], 0.0)

  seen = []
  for row in out:
    matches = [s for s in range(-2, 3) if np.array_equal(row, shifted(s))]
    assert len(matches) == 1, row
    seen.append(matches[0])
  assert set(seen) == {-2, -1, 0, 1, 2}
  images = jnp.ones((4, 5, 5, 1))
  assert training.random_shift(jax.random.key(1), images, 1).shape == (4, 5, 5, 1)


def test_per_example_losses_and_late_switch_at_the_ensembles_step():
  model, batch = _model(), _batch(alpha=0.0, switch_step=2)
  params, teacher_params = _params(model, batch), _params(model, batch, seed=7)
  teacher = distill.Teacher.from_model(model, {'params': teacher_params})
  loss_fn = jax.jit(distill.make_loss_fn(model, num_classes=4, teacher=teacher, tau=2.0))
  logits = model.apply({'params': params}, batch['inputs'])
  t_logits = model.apply({'params': teacher_params}, batch['inputs'])
  for step, expected in ((0, distill.cross_entropy(logits, batch['label'])),
                         (1, distill.cross_entropy(logits, batch['label'])),
                         (2, distill.distillation_loss(logits, batch['label'], t_logits,
                                                       alpha=0.0, tau=2.0))):
    at = dict(batch, model=dict(batch['model'], step=step))
    losses, (metrics, state) = loss_fn(params, {}, at, jax.random.key(0))
    assert losses.shape == (16,) and state == {}
    np.testing.assert_allclose(losses, expected, rtol=1e-5)
    assert float(metrics['one_hot_weight']) == (1.0 if step < 2 else 0.0)


def test_teacher_sees_the_students_augmented_inputs():
  """A teacher equal to the student gives a zero gradient (p_T = p_S) only if it is evaluated on
  exactly the inputs the student saw; strong augmentation would make them differ otherwise."""
  model, batch = _model(), _batch(1, alpha=0.0, switch_step=0)
  params = _params(model, batch)
  teacher = distill.Teacher.from_model(model, {'params': params})
  augment = distill.augment_fn({'max_shift': 3, 'noise': 1.0})
  loss_fn = distill.make_loss_fn(model, num_classes=4, teacher=teacher, tau=1.5, augment=augment)
  mean_loss = lambda fn: lambda p: jnp.mean(fn(p, {}, batch, jax.random.key(3))[0])
  grads = jax.grad(mean_loss(loss_fn))(params)
  assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads)) < 1e-6
  # The same teacher on the un-augmented inputs would not agree with the student.
  clean = distill.Teacher.from_function(lambda x: model.apply({'params': params}, batch['inputs']),
                                        num_classes=4)
  loss_clean = distill.make_loss_fn(model, num_classes=4, teacher=clean, tau=1.5, augment=augment)
  grads = jax.grad(mean_loss(loss_clean))(params)
  assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads)) > 1e-3


def test_each_student_distils_from_the_teacher_its_index_names():
  model, batch = _model(), _batch(2)
  stack = jax.tree.map(lambda *a: jnp.stack(a), *[_params(model, batch, seed=s) for s in (5, 6, 7)])
  teachers = distill.Teacher.from_models(model, {'params': stack})
  assert teachers.num_teachers == 3
  params = _params(model, batch)
  loss_fn = jax.jit(distill.make_loss_fn(model, num_classes=4, teacher=teachers, tau=2.0))
  logits = model.apply({'params': params}, batch['inputs'])
  for index in (2, 0):
    own = dict(batch['model'], alpha=0.3, switch_step=0, teacher=index)
    losses, _ = loss_fn(params, {}, dict(batch, model=own), jax.random.key(0))
    t_logits = model.apply({'params': jax.tree.map(lambda a, i=index: a[i], stack)},
                           batch['inputs'])
    np.testing.assert_allclose(losses, distill.distillation_loss(
        logits, batch['label'], t_logits, alpha=0.3, tau=2.0), rtol=1e-5)
  with pytest.raises(distill.DistillError, match='a stack of 3: give the index'):
    teachers.logits(batch['inputs'])
  with pytest.raises(distill.DistillError, match=r"has no \['teacher'\]: give them to "
                                                 'train_ensemble as model_scalars'):
    loss_fn(params, {}, dict(batch, model=dict(batch['model'], alpha=0.0, switch_step=0)),
            jax.random.key(0))


def test_teacher_with_other_classes_or_a_stack_of_probabilities_is_refused_before_compute():
  model, batch = _model(), _batch()
  ten = distill.Teacher.from_model(_model(classes=10),
                                   _model(classes=10).init(jax.random.key(0), batch['inputs'][:1]))
  with pytest.raises(distill.DistillError, match='predicts 10 classes but the data has 4'):
    distill.make_loss_fn(model, num_classes=4, teacher=ten)
  with pytest.raises(distill.DistillError, match='predicts 10 classes but the data has 4'):
    ten.check(batch['inputs'], 4)
  lying = distill.Teacher.from_function(lambda x: jnp.zeros((x.shape[0], 10)), num_classes=4)
  with pytest.raises(distill.DistillError, match=r'returns shape \(16, 10\)'):
    lying.check(batch['inputs'], 4)
  with pytest.raises(distill.DistillError, match='num_classes must be'):
    distill.Teacher.from_function(lambda x: x, num_classes=1)
  # A stack whose second member returns probabilities: named by its index.
  probs = distill.Teacher(lambda x, i: jnp.where(i == 1, 0.25, 1.0) * jnp.ones((x.shape[0], 4)),
                          num_classes=4, num_teachers=2, description='stack')
  with pytest.raises(distill.DistillError, match='stack, teacher 1.*returns probabilities'):
    probs.check(batch['inputs'], 4)
  with pytest.raises(distill.DistillError, match=r'leading sizes \[2, 3\]'):
    distill.Teacher.from_models(model, {'params': {'a': jnp.zeros((2, 4)),
                                                   'b': jnp.zeros((3, 4))}})
  # A student without its alpha / switch step in batch['model'] fails when traced.
  teacher = distill.Teacher.from_model(model, {'params': _params(model, batch)})
  with pytest.raises(distill.DistillError, match=r"no \['alpha', 'switch_step'\]"):
    distill.make_loss_fn(model, num_classes=4, teacher=teacher)(
        _params(model, batch), {}, batch, jax.random.key(0))


def test_batch_norm_students_train_in_training_mode():
  resnet = models.build(ml_collections.ConfigDict(
      {'name': 'resnet', 'ndim': 1, 'width': 4, 'stage_sizes': (1,), 'norm': 'batch'}), 4)
  batch = _batch(3)
  variables = resnet.init(jax.random.key(0), batch['inputs'][:1])
  loss_fn = distill.make_loss_fn(resnet, num_classes=4)
  _, (_, state) = loss_fn(variables['params'], {'batch_stats': variables['batch_stats']}, batch,
                          jax.random.key(0))
  before, after = (jax.tree.leaves(v) for v in (variables['batch_stats'], state['batch_stats']))
  assert any(float(jnp.max(jnp.abs(a - b))) > 1e-4 for a, b in zip(after, before))


def _arrays(n=256):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(n, 12, 1)).astype(np.float32)
  return {'inputs': x, 'label': (x[:, :4, 0].sum(1) > 0).astype(np.int32)}


def _loop(steps=30, learning_rate=1e-3):
  return loop_config.get_config(batch_size=32, total_steps=steps, num_devices=1,
                                checkpoint_every_steps=steps, log_every_steps=10,
                                optimizer=loop_config.optimizer(learning_rate=learning_rate))


MLP = ml_collections.ConfigDict({'name': 'mlp', 'widths': (8,)})


def test_students_train_in_one_ensemble_each_from_its_own_teacher(tmp_path):
  arrays = _arrays()
  model, teachers = training.train(_loop(60, 1e-2), str(tmp_path / 'teachers'), model_config=MLP,
                                   num_models=2, arrays=arrays, num_classes=2,
                                   shared_order=False)
  # Teacher 1 predicts the opposite class of teacher 0 (its readout negated).
  params = jax.tree.map(np.asarray, teachers.state.params)
  flipped = jax.tree.map(lambda a: np.stack([a[0], a[0]]), params)
  flipped['readout'] = jax.tree.map(lambda a: np.stack([a[0], -a[0]]), params['readout'])
  stack = distill.Teacher.from_models(model, {'params': flipped}, 2)
  # Students 0 and 1 copy teachers 1 and 0 (alpha 0 from step 0).
  _, students = training.train(_loop(100, 1e-2), str(tmp_path / 'students'), model_config=MLP,
                               num_models=2, arrays=arrays, num_classes=2, teacher=stack,
                               teacher_index=[1, 0], alphas=[0.0, 0.0], switch_steps=[0, 0])
  p_s = training.probabilities(model, students.state, arrays['inputs'])
  top_t = [np.argmax(np.asarray(stack.logits(arrays['inputs'], i)), -1) for i in (0, 1)]
  assert p_s.shape == (2, 256, 2)
  agree = lambda s, t: float(np.mean(p_s[s].argmax(-1) == top_t[t]))
  assert agree(0, 1) > 0.8 and agree(1, 0) > 0.8, (agree(0, 1), agree(1, 0))
  # The checkpoints hold both teachers: the stack again, or one by its index.
  again = distill.Teacher.from_checkpoint(str(tmp_path / 'teachers'), model)
  assert again.num_teachers == 2
  one = distill.Teacher.from_checkpoint(str(tmp_path / 'teachers'), model, index=1)
  np.testing.assert_allclose(one.logits(arrays['inputs'][:8]),
                             again.logits(arrays['inputs'][:8], 1), rtol=1e-6)
  with pytest.raises(distill.DistillError, match='holds 2 models; use 0..1'):
    distill.Teacher.from_checkpoint(str(tmp_path / 'teachers'), model, index=2)
  with pytest.raises(distill.DistillError, match='points past the stack of 2 teachers'):
    training.train(_loop(), str(tmp_path / 'bad'), model_config=MLP, num_models=2, arrays=arrays,
                   num_classes=2, teacher=stack, teacher_index=[0, 2])
  with pytest.raises(distill.DistillError, match=r'alphas needs one value per model \(2\)'):
    training.train(_loop(), str(tmp_path / 'bad'), model_config=MLP, num_models=2, arrays=arrays,
                   num_classes=2, teacher=stack, alphas=[0.0])
  with pytest.raises(distill.DistillError, match='alpha must'):
    training.train(_loop(), str(tmp_path / 'bad'), model_config=MLP, num_models=2, arrays=arrays,
                   num_classes=2, teacher=stack, alphas=[0.0, 2.0])
  assert not (tmp_path / 'bad').exists()


def test_train_model_and_teacher_from_its_checkpoint(tmp_path):
  arrays = _arrays()
  trained = distill.train_model(_loop(), str(tmp_path / 'teacher'), model_config=MLP,
                                arrays=arrays, num_classes=2)
  x = arrays['inputs']
  one = nn.meta.unbox(trained.model.init(jax.random.key(0), x[:1]))  # one model's variables, no model axis
  assert jax.tree.map(jnp.shape, trained.variables) == jax.tree.map(jnp.shape, dict(one))
  teacher = distill.Teacher.from_checkpoint(str(tmp_path / 'teacher'), trained.model)
  assert teacher.num_teachers == 0
  np.testing.assert_allclose(teacher.logits(x[:8]), trained.logits(x[:8]), rtol=1e-6)
  student = distill.train_model(_loop(), str(tmp_path / 'student'), model_config=MLP,
                                arrays=arrays, num_classes=2,
                                teacher=distill.Teacher.from_classifier(trained), alpha=0.5)
  assert student.logits(x[:8]).shape == (8, 2)
  with pytest.raises(distill.DistillError, match='No teacher checkpoint'):
    distill.Teacher.from_checkpoint(str(tmp_path / 'nowhere'), trained.model)
  with pytest.raises(distill.DistillError, match=r'Training labels must be in \[0, 2\)'):
    distill.train_model(_loop(), str(tmp_path / 'bad'), model_config=MLP,
                        arrays=dict(arrays, label=arrays['label'] + 1), num_classes=2)

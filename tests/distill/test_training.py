"""Losses for the loop: per-example shapes, the step counter and late switching, the teacher on the
student's augmented inputs, copies that train independently, teachers from checkpoints."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import distill
from common import models
from configs.common import loop as loop_config
from distill import copies
from distill import training
from distill.teacher import STEP_COLLECTION


def _model(widths=(8,), classes=4):
  return models.build(ml_collections.ConfigDict({'name': 'mlp', 'widths': widths}), classes)


def _batch(seed=0, b=16, length=12, classes=4):
  rng = np.random.default_rng(seed)
  return {'inputs': rng.normal(size=(b, length, 1)).astype(np.float32),
          'label': rng.integers(0, classes, b).astype(np.int32)}


def _state(model, batch, seed=0):
  init = distill.with_step_counter(lambda r: model.init(r, batch['inputs'][:1], train=False))
  variables = dict(init(jax.random.key(seed)))
  return variables.pop('params'), variables


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


def test_per_example_losses_and_late_switch_through_the_counter():
  model, batch = _model(), _batch()
  params, state = _state(model, batch)
  teacher_params, _ = _state(model, batch, seed=7)
  teacher = distill.Teacher.from_model(model, {'params': teacher_params})
  loss_fn = distill.make_loss_fn(model, num_classes=4, teacher=teacher, alpha=0.0, tau=2.0,
                                 switch_step=2, per_example=True)
  logits = model.apply({'params': params}, batch['inputs'])
  t_logits = model.apply({'params': teacher_params}, batch['inputs'])
  rng = jax.random.key(0)
  for step, expected in ((0, distill.cross_entropy(logits, batch['label'])),
                         (1, distill.cross_entropy(logits, batch['label'])),
                         (2, distill.distillation_loss(logits, batch['label'], t_logits,
                                                       alpha=0.0, tau=2.0))):
    assert int(state[STEP_COLLECTION]['step']) == step
    losses, (metrics, state) = jax.jit(loss_fn)(params, state, batch, rng)
    assert losses.shape == (16,)
    np.testing.assert_allclose(losses, expected, rtol=1e-5)
    assert float(metrics['one_hot_weight']) == (1.0 if step < 2 else 0.0)
  mean_fn = distill.make_loss_fn(model, num_classes=4, teacher=teacher, alpha=0.0, tau=2.0)
  loss, _ = mean_fn(params, state, batch, rng)
  np.testing.assert_allclose(loss, jnp.mean(loss_fn(params, state, batch, rng)[0]), rtol=1e-6)


def test_teacher_sees_the_students_augmented_inputs():
  """A teacher equal to the student gives a zero gradient (p_T = p_S) only if it is evaluated on
  exactly the inputs the student saw; strong augmentation would make them differ otherwise."""
  model, batch = _model(), _batch(1)
  params, state = _state(model, batch)
  teacher = distill.Teacher.from_model(model, {'params': params})
  augment = distill.augment_fn({'max_shift': 3, 'noise': 1.0})
  loss_fn = distill.make_loss_fn(model, num_classes=4, teacher=teacher, alpha=0.0, tau=1.5,
                                 augment=augment)
  grads = jax.grad(lambda p: loss_fn(p, state, batch, jax.random.key(3))[0])(params)
  assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads)) < 1e-6
  # The same teacher on the un-augmented inputs would not agree with the student.
  clean = distill.Teacher.from_function(lambda x: model.apply({'params': params}, batch['inputs']),
                                        num_classes=4)
  loss_clean = distill.make_loss_fn(model, num_classes=4, teacher=clean, alpha=0.0, tau=1.5,
                                    augment=augment)
  grads = jax.grad(lambda p: loss_clean(p, state, batch, jax.random.key(3))[0])(params)
  assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads)) > 1e-3


def test_teacher_with_other_classes_is_refused_before_compute():
  model, batch = _model(), _batch()
  params, _ = _state(model, batch)
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
  with pytest.raises(distill.DistillError, match='no .distill_step. collection'):
    distill.make_loss_fn(model, num_classes=4)(params, {}, batch, jax.random.key(0))


def test_copies_train_independently_with_their_own_teachers():
  base = _model()
  model = copies.make(base, 3)
  batch = _batch(2)
  x0 = jnp.zeros((3, 1, 12, 1))
  variables = dict(nn.meta.unbox(
      distill.with_step_counter(lambda r: model.init(r, x0))(jax.random.key(0))))
  params = variables.pop('params')
  assert jax.tree.leaves(params)[0].shape[0] == 3
  teacher_vars = nn.meta.unbox(model.init(jax.random.key(5), x0))
  # Student copies 0, 1, 2 learn from teacher copies 2, 2, 0.
  teacher = distill.Teacher.from_model(model, copies.select(teacher_vars, [2, 2, 0]), 4)
  loss_fn = copies.make_loss_fn(model, num_copies=3, num_classes=4, teacher=teacher,
                                alphas=[1.0, 0.0, 0.3], switch_steps=[0, 0, 5], tau=2.0)
  loss, _ = loss_fn(params, variables, batch, jax.random.key(1))
  one = lambda tree, c: jax.tree.map(lambda a: a[c], tree)
  logits = [base.apply({'params': one(params['model'], c)}, batch['inputs']) for c in range(3)]
  t_logits = [base.apply({'params': one(teacher_vars['params']['model'], c)}, batch['inputs'])
              for c in (2, 2, 0)]
  expected = (jnp.mean(distill.cross_entropy(logits[0], batch['label']))
              + jnp.mean(distill.distillation_loss(logits[1], batch['label'], t_logits[1],
                                                   alpha=0.0, tau=2.0))
              + jnp.mean(distill.cross_entropy(logits[2], batch['label'])))  # before its switch
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  # The gradient of copy 0 does not depend on the other copies' parameters.
  grad = lambda p: jax.grad(lambda q: loss_fn(q, variables, batch, jax.random.key(1))[0])(p)
  moved = jax.tree.map(lambda a: a.at[1:].add(1.0), params)
  kernel = lambda g: one(g['model']['readout']['kernel'], 0)
  np.testing.assert_allclose(kernel(grad(params)), kernel(grad(moved)), rtol=1e-6)
  with pytest.raises(distill.DistillError, match='one entry per copy'):
    copies.make_loss_fn(model, num_copies=3, num_classes=4, alphas=[1.0])
  with pytest.raises(distill.DistillError, match='alpha must'):
    copies.make_loss_fn(model, num_copies=3, num_classes=4, alphas=[1.0, 2.0, 0.0])


def test_copies_train_batch_norm_in_training_mode():
  resnet = models.build(ml_collections.ConfigDict(
      {'name': 'resnet', 'ndim': 1, 'width': 4, 'stage_sizes': (1,), 'norm': 'batch'}), 3)
  model = copies.make(resnet, 2)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 8, 12, 1)), jnp.float32)
  variables = model.init(jax.random.key(0), x)
  _, updated = model.apply(variables, x, train=True, mutable=['batch_stats'])
  before, after = (jax.tree.leaves(v['batch_stats']) for v in (variables, updated))
  assert before[0].shape[0] == 2
  assert any(float(jnp.max(jnp.abs(a - b))) > 1e-4 for a, b in zip(after, before))
  np.testing.assert_allclose(model.apply(variables, x), model.apply(variables, x, train=False))


def test_train_model_and_teacher_from_its_checkpoint(tmp_path):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(256, 12, 1)).astype(np.float32)
  arrays = {'inputs': x, 'label': (x[:, :4, 0].sum(1) > 0).astype(np.int32)}
  loop = loop_config.get_config(batch_size=32, total_steps=30, num_devices=1,
                                checkpoint_every_steps=30, log_every_steps=10)
  model_config = ml_collections.ConfigDict({'name': 'mlp', 'widths': (8,)})
  trained = distill.train_model(loop, str(tmp_path / 'teacher'), model_config=model_config,
                                arrays=arrays, num_classes=2)
  assert STEP_COLLECTION not in trained.variables
  teacher = distill.Teacher.from_checkpoint(str(tmp_path / 'teacher'), trained.model)
  np.testing.assert_allclose(teacher.logits(x[:8]), trained.logits(x[:8]), rtol=1e-6)
  with pytest.raises(distill.DistillError, match='No teacher checkpoint'):
    distill.Teacher.from_checkpoint(str(tmp_path / 'nowhere'), trained.model)
  with pytest.raises(distill.DistillError, match=r'Training labels must be in \[0, 2\)'):
    distill.train_model(loop, str(tmp_path / 'bad'), model_config=model_config,
                        arrays=dict(arrays, label=arrays['label'] + 1), num_classes=2)

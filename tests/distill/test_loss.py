"""The distillation loss against hand computations, its gradient at tau, late switching, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import distill
from distill import loss as loss_lib


def _softmax(z):
  z = z - z.max(-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(-1, keepdims=True)


def _inputs(seed=0, b=6, c=4):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(b, c)).astype(np.float32) * 2,
          rng.normal(size=(b, c)).astype(np.float32) * 2, rng.integers(0, c, b))


@pytest.mark.parametrize('alpha,tau', [(0.0, 1.0), (0.5, 2.0), (0.9, 4.0), (1.0, 0.5)])
def test_loss_equals_the_formula_by_hand(alpha, tau):
  s, t, y = _inputs()
  p_s, p_s_tau, p_t_tau = _softmax(s), _softmax(s / tau), _softmax(t / tau)
  hard = -np.log(p_s[np.arange(len(y)), y])
  soft = tau**2 * -np.sum(p_t_tau * np.log(p_s_tau), axis=1)
  expected = alpha * hard + (1 - alpha) * soft
  got = distill.distillation_loss(s, y, t, alpha=alpha, tau=tau)
  assert got.shape == (6,)
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_gradient_at_tau():
  """d l / d s = alpha (p_S - e_y) + (1 - alpha) tau (p_S(tau) - p_T(tau)); none to the teacher."""
  s, t, y = _inputs(1)
  alpha, tau = 0.3, 3.0
  grad_s, grad_t = jax.grad(lambda s, t: jnp.sum(distill.distillation_loss(
      s, y, t, alpha=alpha, tau=tau)), argnums=(0, 1))(s, t)
  expected = alpha * (_softmax(s) - np.eye(4)[y]) + (1 - alpha) * tau * (
      _softmax(s / tau) - _softmax(t / tau))
  np.testing.assert_allclose(grad_s, expected, atol=1e-5)
  np.testing.assert_array_equal(grad_t, 0.0)


def test_teacher_probabilities_equal_teacher_logits_and_zeros_are_safe():
  s, t, y = _inputs(2)
  from_logits = distill.distillation_loss(s, y, t, alpha=0.2, tau=2.0)
  from_probs = distill.distillation_loss(s, y, teacher_probs=_softmax(t.astype(np.float64)),
                                         alpha=0.2, tau=2.0)
  np.testing.assert_allclose(from_logits, from_probs, rtol=1e-5)
  one_hot = np.eye(4)[y]  # probabilities with exact zeros: log 0 must not give NaN
  got = distill.distillation_loss(s, None, teacher_probs=one_hot, alpha=0.0, tau=2.0)
  assert np.all(np.isfinite(got))
  # A one-hot teacher at tau = 1 is the one-hot loss.
  np.testing.assert_allclose(distill.distillation_loss(s, None, teacher_probs=one_hot, alpha=0.0),
                             distill.cross_entropy(s, y), rtol=1e-5)


def test_late_alpha_switches_at_the_step_and_works_under_jit():
  assert float(distill.late_alpha(4, 5, 0.2)) == 1.0
  assert float(distill.late_alpha(5, 5, 0.2)) == pytest.approx(0.2)
  s, t, y = _inputs(3)
  fn = jax.jit(lambda step: distill.distillation_loss(
      s, y, t, alpha=distill.late_alpha(step, 10, 0.0), tau=2.0))
  np.testing.assert_allclose(fn(3), distill.cross_entropy(s, y), rtol=1e-6)
  np.testing.assert_allclose(fn(10), distill.distillation_loss(s, y, t, alpha=0.0, tau=2.0),
                             rtol=1e-6)
  assert loss_lib.switch_step_of(0.5, 301) == 151 and loss_lib.switch_step_of(0.0, 10) == 0


@pytest.mark.parametrize('tau', [0.0, -1.0, float('nan'), float('inf'), (1.0, 2.0)])
def test_bad_tau_is_refused(tau):
  s, t, y = _inputs()
  with pytest.raises(distill.DistillError, match='tau must be'):
    distill.distillation_loss(s, y, t, alpha=0.5, tau=tau)


@pytest.mark.parametrize('alpha', [-0.1, 1.5, float('nan'), True])
def test_alpha_outside_the_unit_interval_is_refused(alpha):
  s, t, y = _inputs()
  with pytest.raises(distill.DistillError, match='alpha must'):
    distill.distillation_loss(s, y, t, alpha=alpha, tau=1.0)
  with pytest.raises(distill.DistillError, match='alpha must'):
    distill.late_alpha(0, 5, alpha)


def test_wrong_shapes_and_class_ids_are_refused():
  s, t, y = _inputs()
  with pytest.raises(distill.DistillError, match='teacher has 5 classes and the student 4'):
    distill.distillation_loss(s, y, np.zeros((6, 5), np.float32))
  with pytest.raises(distill.DistillError, match=r'class ids\? Pass them as labels'):
    distill.distillation_loss(s, y, teacher_probs=y)
  with pytest.raises(distill.DistillError, match='non-negative.*not logits'):
    distill.distillation_loss(s, y, teacher_probs=t)
  with pytest.raises(distill.DistillError, match='sum to 1.*not logits'):
    distill.distillation_loss(s, y, teacher_probs=np.abs(t))
  with pytest.raises(distill.DistillError, match=r'teacher_probs has shape \(6, 3\)'):
    distill.distillation_loss(s, y, teacher_probs=np.full((6, 3), 1 / 3))
  with pytest.raises(distill.DistillError, match=r'one-hot or probability rows\? pass class ids'):
    distill.distillation_loss(s, np.eye(4)[y], t)
  with pytest.raises(distill.DistillError, match=r'labels must be in \[0, 4\)'):
    distill.distillation_loss(s, y + 4, t)
  with pytest.raises(distill.DistillError, match='integer class ids'):
    distill.distillation_loss(s, y.astype(np.float32), t)
  with pytest.raises(distill.DistillError, match=r'student_logits must be \(batch, classes\)'):
    distill.distillation_loss(s[0], y, t)
  with pytest.raises(distill.DistillError, match='exactly one of'):
    distill.distillation_loss(s, y, t, teacher_probs=_softmax(t))
  with pytest.raises(distill.DistillError, match='labels are needed'):
    distill.distillation_loss(s, None, t, alpha=0.5)
  with pytest.raises(distill.DistillError, match='switch_step must be'):
    distill.late_alpha(0, -1, 0.5)


def test_a_nan_teacher_logit_is_refused_naming_its_row():
  s, t, y = _inputs()
  t[2, 1] = np.nan
  with pytest.raises(distill.DistillError, match=r'teacher_logits row 2 has nan at class 1'):
    distill.distillation_loss(s, y, t, alpha=0.5)
  t[2, 1] = np.inf
  with pytest.raises(distill.DistillError, match=r'row 2 has inf'):
    distill.distillation_loss(s, y, t, alpha=0.5)
  t[2] = -np.inf
  with pytest.raises(distill.DistillError, match=r'row 2 is -inf for every class'):
    distill.distillation_loss(s, y, t, alpha=0.5)


def test_a_nan_teacher_logit_makes_that_rows_loss_nan_under_jit():
  """Under jit nothing can raise: the row's loss must be NaN (the loop's guard stops it), not the
  hard term alone (0.595 instead of 1.509 before)."""
  s, t, y = _inputs()
  clean = distill.distillation_loss(s, y, t, alpha=0.5)
  t[2, 1] = np.nan
  got = np.asarray(jax.jit(lambda t: distill.distillation_loss(s, y, t, alpha=0.5, tau=2.0))(t))
  assert np.isnan(got[2]) and np.all(np.isfinite(np.delete(got, 2)))
  assert np.isnan(np.mean(got))
  t[2, 1] = np.inf
  got = np.asarray(jax.jit(lambda t: distill.distillation_loss(s, y, t, alpha=0.5))(t))
  assert np.isnan(got[2])
  np.testing.assert_allclose(np.delete(got, 2), np.delete(np.asarray(clean), 2), rtol=1e-6)
  probs = _softmax(_inputs()[1])
  probs[4, 0] = np.nan
  got = np.asarray(jax.jit(lambda p: distill.distillation_loss(s, y, teacher_probs=p))(probs))
  assert np.isnan(got[4]) and np.all(np.isfinite(np.delete(got, 4)))


def test_a_teacher_logit_of_minus_inf_rules_that_class_out():
  s, t, y = _inputs()
  t[:, 0] = -np.inf
  probs = _softmax(np.where(np.isinf(t), -1e30, t).astype(np.float64))
  np.testing.assert_allclose(distill.distillation_loss(s, y, t, alpha=0.3, tau=2.0),
                             distill.distillation_loss(s, y, teacher_probs=probs, alpha=0.3,
                                                       tau=2.0), rtol=1e-5)


def test_probabilities_passed_as_teacher_logits_are_refused_with_the_fix():
  s, t, y = _inputs()
  probs = _softmax(t).astype(np.float32)
  wrong = distill.distillation_loss(s, y, teacher_probs=probs, alpha=0.0)
  with pytest.raises(distill.DistillError, match=r'look like probabilities.*teacher_probs='):
    distill.distillation_loss(s, y, probs, alpha=0.0)
  # One-hot rows are probabilities too.
  with pytest.raises(distill.DistillError, match='look like probabilities'):
    distill.distillation_loss(s, y, np.eye(4, dtype=np.float32)[y], alpha=0.0)
  # Under jit the mistake cannot be seen: the loss is that of flattened targets (documented).
  jitted = jax.jit(lambda p: distill.distillation_loss(s, y, p, alpha=0.0))(probs)
  assert np.max(np.abs(np.asarray(jitted) - np.asarray(wrong))) > 0.05
  # Logits that happen to be non-negative but do not sum to one pass.
  distill.distillation_loss(s, y, np.abs(t), alpha=0.0)
  assert loss_lib.looks_like_probabilities(probs)
  assert not loss_lib.looks_like_probabilities(t)
  assert not loss_lib.looks_like_probabilities(probs * 1.001)

"""Deviation analysis and the eigenspace view against hand computations; their bad input."""

import numpy as np
import pytest

import distill
from distill import deviations
from distill import eigenspace


def _two_class(p):
  p = np.asarray(p, np.float64)
  return np.stack([p, 1 - p], axis=1)


def _exaggerate(p, factor):
  """p with its log-odds multiplied by factor."""
  z = factor * np.log(p / (1 - p))
  return 1 / (1 + np.exp(-z))


def test_exaggerated_student_has_slope_and_binned_deviation_by_hand():
  p_t = np.array([0.1, 0.3, 0.5, 0.7, 0.9, 0.97])
  p_s = _exaggerate(p_t, 2.0)
  labels = np.zeros(6, int)  # class 0 holds p
  dev = distill.analyse(_two_class(p_t), _two_class(p_s), labels)
  assert dev.log_odds_slope == pytest.approx(2.0) and dev.log_odds_intercept == pytest.approx(0.0)
  expected = [p_s[0] - p_t[0], p_s[1] - p_t[1], p_s[2] - p_t[2], p_s[3] - p_t[3],
              p_s[4] - p_t[4], p_s[5] - p_t[5]]  # one point per card bin
  np.testing.assert_allclose(dev.binned_deviation, expected)
  assert dev.binned_deviation[0] < 0 and dev.binned_deviation[-1] > 0
  np.testing.assert_array_equal(dev.bin_counts, [1, 1, 1, 1, 1, 1])
  assert dev.mean_deviation(0.0, 0.4) == pytest.approx(np.mean(expected[:2]))
  # Class 1 for the point at 0.5 is a tie: argmax takes class 0 for both; all agree.
  assert dev.agreement == 1.0
  kl = np.sum(_two_class(p_t) * np.log(_two_class(p_t) / _two_class(p_s)), 1).mean()
  assert dev.kl_teacher_student == pytest.approx(kl)
  assert dev.teacher_accuracy == pytest.approx(np.mean(p_t >= 0.5))


def test_identical_models_do_not_deviate_and_top_class_reference():
  rng = np.random.default_rng(0)
  p = rng.dirichlet(np.ones(5), size=200)
  dev = distill.analyse(p, p)
  assert dev.reference == 'teacher_top' and dev.teacher_accuracy is None
  np.testing.assert_allclose(dev.p_teacher, p.max(1))
  assert np.nanmax(np.abs(dev.binned_deviation)) == 0 and dev.kl_teacher_student == 0
  assert dev.log_odds_slope == pytest.approx(1.0) and dev.agreement == 1.0


def test_pooled_equals_one_analysis_of_the_concatenation():
  rng = np.random.default_rng(1)
  parts = [(rng.dirichlet(np.ones(3), 50), rng.dirichlet(np.ones(3), 50), rng.integers(0, 3, 50))
           for _ in range(3)]
  pooled = deviations.pooled([distill.analyse(*p) for p in parts])
  whole = distill.analyse(*(np.concatenate(x) for x in zip(*parts)))
  np.testing.assert_allclose(pooled.binned_deviation, whole.binned_deviation)
  assert pooled.log_odds_slope == pytest.approx(whole.log_odds_slope)
  assert pooled.kl_teacher_student == pytest.approx(whole.kl_teacher_student)
  assert pooled.student_accuracy == pytest.approx(whole.student_accuracy)


def test_deviation_bad_input_is_refused():
  p = np.full((4, 3), 1 / 3)
  with pytest.raises(distill.DistillError, match=r'class ids.*softmax outputs'):
    distill.analyse(np.array([0, 1, 2, 0]), p)
  with pytest.raises(distill.DistillError, match='sum to 1'):
    distill.analyse(p, p * 3)
  with pytest.raises(distill.DistillError, match='non-negative'):
    distill.analyse(p - 0.5, p)
  with pytest.raises(distill.DistillError, match='differ in their classes'):
    distill.analyse(p, np.full((4, 2), 0.5))
  with pytest.raises(distill.DistillError, match='differ in their examples'):
    distill.analyse(p, p[:3])
  with pytest.raises(distill.DistillError, match=r'labels must be in \[0, 3\)'):
    distill.analyse(p, p, np.array([0, 1, 2, 3]))
  with pytest.raises(distill.DistillError, match=r'labels must be \(4,\) class ids'):
    distill.analyse(p, p, np.eye(3)[[0, 1, 2, 0]])
  with pytest.raises(distill.DistillError, match='bins must be increasing'):
    distill.analyse(p, p, bins=(0.0, 0.5, 0.4, 1.0))
  with pytest.raises(distill.DistillError, match='empty'):
    distill.analyse(np.zeros((0, 3)), np.zeros((0, 3)))


def test_gradient_descent_matches_the_closed_forms():
  problem = distill.make_problem(n=60, d=20, decay=1.0, noise=0.5, test_size=100, seed=3)
  view = distill.distil_linear(problem, teacher_steps=37, student_steps=23)
  assert view.closed_form_error < 1e-10
  np.testing.assert_allclose(view.ratio, eigenspace.spectral_filter(view.lam, view.eta, 23),
                             rtol=1e-8)
  # The student is a second filter: ~1 on the top direction, small on the bottom one.
  assert view.ratio[0] > 0.99 and view.ratio[-1] < 0.5
  assert view.ratio[-1] == pytest.approx(1 - (1 - view.eta * view.lam[-1]) ** 23)


def test_long_gradient_descent_reaches_least_squares_and_bad_input():
  problem = distill.make_problem(n=40, d=10, seed=0)
  lam, _ = eigenspace.eigendecomposition(problem.x_train)
  w = eigenspace.gradient_descent(problem.x_train, problem.y_train, eta=1.0 / lam[0],
                                  steps=20_000)
  np.testing.assert_allclose(w, eigenspace.ols(problem.x_train, problem.y_train), atol=1e-8)
  with pytest.raises(distill.DistillError, match=r'eta=.*\(0, 2 / lambda_max\)'):
    distill.distil_linear(problem, eta=2.5 / lam[0], teacher_steps=5, student_steps=5)
  with pytest.raises(distill.DistillError, match='steps must be a whole number'):
    distill.distil_linear(problem, teacher_steps=-1, student_steps=5)
  with pytest.raises(distill.DistillError, match=r'y must be \(40,\)'):
    eigenspace.gradient_descent(problem.x_train, problem.y_train[:5], eta=0.1, steps=1)
  with pytest.raises(distill.DistillError, match='design matrix'):
    eigenspace.eigendecomposition(problem.y_train)

"""The baselines scores by hand: MSP, ODIN, Mahalanobis, outlier exposure (abstain.scores)."""

import numpy as np
import pytest
from scipy import special

from abstain import estimators
from abstain import scores


# ------------------------------------------------------------------------------------------------
# Baselines.
# ------------------------------------------------------------------------------------------------
def test_baseline_scores_by_hand():
  logits = np.array([[2.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
  probs = special.softmax(logits, axis=1)
  np.testing.assert_allclose(scores.msp(probs), 1 - probs.max(1))
  np.testing.assert_allclose(scores.max_logit(logits), [-2.0, -1.0])
  np.testing.assert_allclose(scores.energy(logits),
                             [-np.log(np.exp(2) + 2), -(1 + np.log(3))])
  s1, s2 = np.array([1.0, 2.0]), np.array([3.0, -1.0])
  np.testing.assert_allclose(scores.linear_double(s1, s2, 0.0), s1)
  np.testing.assert_allclose(scores.linear_double(s1, s2, np.pi / 2), s2, atol=1e-12)
  sirc = scores.Sirc(a=0.0, b=2.0)
  np.testing.assert_allclose(sirc.score(np.array([0.9]), np.array([1.0])),
                             [np.log(0.1 + 1e-6) + np.log1p(np.exp(-2.0))])
  assert scores.Sirc.fit(np.array([1.0, 3.0])).a == pytest.approx(2.0 - 3.0)


def test_odin_without_perturbation_is_tempered_msp():
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  w = np.array([[1.0, -1.0, 0.5], [0.0, 2.0, -1.0]], np.float32)
  x = np.random.default_rng(0).normal(size=(7, 2)).astype(np.float32)
  fn = lambda v: jnp.dot(v, w)
  plain = scores.odin(fn, x, temperature=2.0, epsilon=0.0)
  np.testing.assert_allclose(plain, 1 - estimators.max_prob(x @ w, 2.0), atol=1e-5)
  perturbed = scores.odin(fn, x, temperature=2.0, epsilon=0.1)
  assert np.all(perturbed <= plain + 1e-6)  # the step raises the max probability


def test_mahalanobis_scores_far_points_higher():
  rng = np.random.default_rng(0)
  f = np.concatenate([rng.normal(-3, 1, (200, 2)), rng.normal(3, 1, (200, 2))])
  labels = np.repeat([0, 1], 200)
  maha = scores.Mahalanobis.fit(f, labels)
  s = maha.score(np.array([[-3.0, -3.0], [3.0, 3.0], [10.0, -10.0]]))
  assert s[2] > 10 * max(s[0], s[1])


def test_mahalanobis_scores_many_examples_without_their_differences_to_every_class_mean():
  """Scoring built the (N, K, D) differences: CIFAR's 18,000 test examples x 80 classes x 512
  features were 5.9 GB and ~5 minutes per seed."""
  import tracemalloc  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  n, k, d = 1_000, 40, 128
  maha = scores.Mahalanobis.fit(rng.normal(size=(2_000, d)), rng.integers(0, k, 2_000))
  f = rng.normal(size=(n, d))
  tracemalloc.start()
  s = maha.score(f)
  peak = tracemalloc.get_traced_memory()[1]
  tracemalloc.stop()
  assert peak < 10 * 2**20  # the differences alone were n x k x d x 8 bytes = 41 MB
  by_class = [np.einsum('nd,de,ne->n', f - m, maha.precision, f - m) for m in maha.means]
  np.testing.assert_allclose(s, np.min(by_class, axis=0), rtol=1e-9)


def test_outlier_exposure_loss_by_hand():
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  logits = jnp.array([[2.0, 0.0], [0.0, 0.0], [1.0, -1.0]])
  labels = jnp.array([0, 1, 0])
  is_outlier = jnp.array([0.0, 0.0, 1.0])
  log_p = special.log_softmax(np.asarray(logits), axis=1)
  expected = -(log_p[0, 0] + log_p[1, 1]) / 2 + 0.5 * -log_p[2].mean()
  assert float(scores.outlier_exposure_loss(logits, labels, is_outlier, 0.5)) == pytest.approx(
      expected, rel=1e-5)

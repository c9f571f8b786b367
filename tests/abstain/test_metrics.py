"""The metrics against brute force and hand computations (abstain.metrics)."""

import numpy as np
import pytest

from abstain import metrics


# ------------------------------------------------------------------------------------------------
# Metrics.
# ------------------------------------------------------------------------------------------------
def test_auroc_matches_a_brute_force_pair_count():
  rng = np.random.default_rng(0)
  score = rng.integers(0, 5, 60).astype(float)  # many ties
  out = rng.random(60) < 0.3
  pairs = [(1.0 if so > si else 0.5 if so == si else 0.0)
           for so in score[out] for si in score[~out]]
  assert metrics.auroc(score, out) == pytest.approx(np.mean(pairs))


def test_fpr_at_tpr_by_hand():
  score = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.15, 0.35, 0.9])
  out = np.array([0, 0, 0, 0, 0, 1, 1, 1])
  # Accepting 80% of the 5 inliers needs threshold 0.4: outliers 0.15 and 0.35 are accepted.
  assert metrics.fpr_at_tpr(score, out, 0.8) == pytest.approx(2 / 3)
  assert metrics.fpr_at_tpr(score, out, 1.0) == pytest.approx(2 / 3)
  assert metrics.fpr_at_tpr(score, out, 0.2) == pytest.approx(0.0)


def test_risk_coverage_curve_against_brute_force():
  rng = np.random.default_rng(1)
  score = rng.normal(size=40)
  out, correct = rng.random(40) < 0.3, rng.random(40) < 0.7
  curve = metrics.risk_coverage_curve(score, out, correct)
  order = np.argsort(score)
  for k in range(1, 41):
    acc = order[:k]
    assert curve.risk[k] == pytest.approx(np.mean(out[acc] | ~correct[acc]))
  assert curve.aurc == pytest.approx(np.mean(curve.risk[1:]))
  ties = metrics.risk_coverage_curve(np.zeros(4), np.array([0, 0, 1, 1]), np.array([1, 1, 0, 0]))
  np.testing.assert_allclose(ties.risk[1:], [0.5, 0.5, 0.5, 0.5])


def test_selective_accuracy_and_joint_risk():
  score = np.array([0.0, 0.1, 0.2, 0.3, 0.9, 0.25])
  out = np.array([0, 0, 0, 0, 1, 1])
  correct = np.array([1, 1, 0, 1, 0, 0])
  # Budget 1/3 rejects 0.9 and 0.3; accepted: three inliers (two right) and the 0.25 outlier.
  assert metrics.selective_accuracy(score, out, correct, 1 / 3) == pytest.approx(2 / 4)
  j = metrics.joint_risk_at_tpr(score, out, correct, tpr=0.75, beta=0.5)
  # Threshold 0.2 accepts inliers 0, 0.1, 0.2 (one wrong) and no outlier.
  assert j['selective_risk'] == pytest.approx(1 / 3) and j['fpr'] == 0.0
  assert j['joint_risk'] == pytest.approx(1 / 6)
  assert j['abstention_rate'] == pytest.approx(np.mean(score > 0.2))

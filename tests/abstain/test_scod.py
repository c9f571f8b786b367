"""The problem: the budget, the SCOD risk and the Bayes rule (abstain.scod, abstain.gaussians)."""

import itertools

import numpy as np
import pytest

from abstain import gaussians
from abstain import scod


# ------------------------------------------------------------------------------------------------
# The problem: budget, risk, Bayes rule.
# ------------------------------------------------------------------------------------------------
def test_abstain_at_budget_is_exact_and_shares_ties():
  score = np.array([5.0, 1.0, 3.0, 3.0, 3.0, 0.0])
  r = scod.abstain_at_budget(score, 0.5)  # 3 of 6: the 5, then 2 of the three tied 3s
  np.testing.assert_allclose(r, [1, 0, 2 / 3, 2 / 3, 2 / 3, 0])
  assert r.sum() == pytest.approx(3.0)
  np.testing.assert_array_equal(scod.abstain_at_budget(score, 0.0), np.zeros(6))
  np.testing.assert_array_equal(scod.abstain_at_budget(score, 1.0), np.ones(6))
  rng = np.random.default_rng(0)
  s = rng.normal(size=101)
  for b in (0.05, 0.2, 0.37):
    r = scod.abstain_at_budget(s, b)
    assert r.sum() == pytest.approx(b * 101)
    assert s[r == 1].min() > s[r == 0].max()  # the largest scores, and only they


def test_scod_risk_against_a_hand_computation():
  # 4 inliers (2 misclassified), 2 outliers; reject the second misclassified inlier and half of
  # one outlier.
  is_outlier = np.array([0, 0, 0, 0, 1, 1])
  correct = np.array([1, 0, 1, 0, 0, 0])
  reject = np.array([0, 0, 0, 1, 0.5, 0])
  # P_in(wrong, accepted) = 1/4; P_out(accepted) = (0.5 + 1) / 2 = 0.75.
  for c in (0.0, 0.3, 1.0):
    assert scod.scod_risk(reject, is_outlier, correct, c) == pytest.approx(
        (1 - c) * 0.25 + c * 0.75)


def _gaussian_sample(n=20_000, pi=1 / 3, seed=0):
  problem = gaussians.GaussianSCOD()
  rng = np.random.default_rng(seed)
  x, y, out = problem.sample_mixture(n, pi, rng)
  post = problem.posterior(x)
  return problem, rng, x, y, out, post.max(1), problem.rho(x), (post.argmax(1) == y) & ~out


def test_bayes_rule_beats_msp_the_ood_score_and_plugins_on_known_densities():
  problem, rng, x, y, out, m, rho, correct = _gaussian_sample()
  plug = gaussians.fit_plugin(problem, 300, 0.3, rng)
  m_hat, correct_hat = plug.max_prob(x), (plug.predict(x) == y) & ~out
  for c, b in itertools.product((0.25, 0.75), (0.1, 0.3)):
    bayes = scod.scod_risk_at_budget(scod.bayes_score(m, rho, c, 1 / 3), out, correct, c, b)
    others = {
        'msp (true posterior)': scod.scod_risk_at_budget(1 - m, out, correct, c, b),
        'rho alone (true)': scod.scod_risk_at_budget(rho, out, correct, c, b),
        'plug-in, slope c_fn': scod.scod_risk_at_budget(
            scod.plugin_score(m_hat, plug.rho(x), c), out, correct_hat, c, b),
        'plug-in, true pi': scod.scod_risk_at_budget(
            scod.bayes_score(m_hat, plug.rho(x), c, 1 / 3), out, correct_hat, c, b)}
    for name, risk in others.items():
      assert bayes <= risk + 2e-3, (c, b, name, bayes, risk)
  # MSP is clearly sub-optimal when accepting outliers is costly (the paper's point).
  c, b = 0.75, 0.3
  assert scod.scod_risk_at_budget(1 - m, out, correct, c, b) > scod.scod_risk_at_budget(
      scod.bayes_score(m, rho, c, 1 / 3), out, correct, c, b) + 0.05


def test_bayes_rule_is_a_half_plane_in_one_minus_m_and_rho():
  _, _, _, _, _, m, rho, _ = _gaussian_sample(n=5000)
  for c, b in ((0.25, 0.1), (0.75, 0.3)):
    lam = scod.bayes_lambda(m, rho, c, 1 / 3, b)
    a_u, a_v, a_c = scod.half_plane(lam, c, 1 / 3)
    t = scod.bayes_score(m, rho, c, 1 / 3)
    np.testing.assert_array_equal(t > lam, a_u * (1 - m) + a_v * rho > a_c)
    assert np.mean(t > lam) == pytest.approx(b, abs=1e-3)


def test_tuned_slope_on_true_quantities_reaches_the_bayes_risk():
  _, _, _, _, out, m, rho, correct = _gaussian_sample(n=12_000)
  val, test = slice(0, 6000), slice(6000, None)
  for c, b in ((0.5, 0.2), (0.75, 0.1)):
    slope = scod.tune_slope(m[val], rho[val], out[val], correct[val], c, b)
    plug = scod.scod_risk_at_budget(scod.plugin_score(m[test], rho[test], c, slope), out[test],
                                    correct[test], c, b)
    bayes = scod.scod_risk_at_budget(scod.bayes_score(m[test], rho[test], c, 1 / 3), out[test],
                                     correct[test], c, b)
    assert plug <= bayes + 0.01


def test_mixture_risk_estimates_the_labelled_risk_without_outlier_labels():
  _, _, _, _, out, m, rho, correct = _gaussian_sample(n=40_000, pi=0.3, seed=1)
  inl, mix = np.arange(20_000)[~out[:20_000]], np.arange(20_000, 40_000)
  score = scod.plugin_score(m, rho, 0.5, 0.2)
  for b in (0.1, 0.3):
    estimate = scod.mixture_risk_at_budget(score[inl], correct[inl], score[mix], 0.5, b, 0.3)
    truth = scod.scod_risk_at_budget(score[mix], out[mix], correct[mix], 0.5, b)
    assert estimate == pytest.approx(truth, abs=0.015)

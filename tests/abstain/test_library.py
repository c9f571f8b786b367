"""abstain's library: the risk, the Bayes rule, the estimators, the baselines, the metrics, and
the errors for bad input."""

import itertools

import numpy as np
import pytest
from scipy import special
from scipy import stats

import abstain
from abstain import estimators
from abstain import gaussians
from abstain import metrics
from abstain import scod
from abstain import scores
from abstain import splits


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


# ------------------------------------------------------------------------------------------------
# Estimators.
# ------------------------------------------------------------------------------------------------
def _densities(x):
  return stats.norm(0, 1).pdf(x), stats.norm(3, 1).pdf(x)  # p_in, p_out: log rho = 3x - 4.5


def test_mixture_correction_recovers_a_known_rho():
  x = np.linspace(-3, 5, 200)
  p_in, p_out = _densities(x)
  pi_mix, share = 0.3, 0.4  # the mixture is 40% of the classifier's training set
  p_mix = (1 - pi_mix) * p_in + pi_mix * p_out
  q = share * p_mix / (share * p_mix + (1 - share) * p_in)  # the exact P(mixture | x)
  np.testing.assert_allclose(estimators.rho_from_mixture(q, pi_mix, share), p_out / p_in,
                             rtol=1e-4)
  q_out = 0.2 * p_out / (0.2 * p_out + 0.8 * p_in)
  # (q is clipped to [1e-6, 1 - 1e-6], so rho below ~4e-6 reads as ~4e-6)
  np.testing.assert_allclose(estimators.rho_from_binary(q_out, 0.2), p_out / p_in, rtol=1e-4,
                             atol=1e-5)
  # Without the correction the mixture's odds overstate rho where outliers are rare.
  naive = estimators.rho_from_binary(q, share)
  assert np.all(naive[x < 0] > 2 * (p_out / p_in)[x < 0])


def test_corrected_sigmoid_recovers_the_mixture_share_and_rho():
  rng = np.random.default_rng(0)
  pi_mix = 0.3
  x_in = rng.normal(0, 1, 6000)
  x_mix = np.where(rng.random(6000) < pi_mix, rng.normal(3, 1, 6000), rng.normal(0, 1, 6000))
  fit = estimators.fit_corrected_sigmoid(x_in, x_mix)
  assert fit.pi_mix == pytest.approx(pi_mix, abs=0.05)
  grid = np.linspace(0.5, 3.5, 7)
  p_in, p_out = _densities(grid)
  np.testing.assert_allclose(np.log(fit.rho(grid)), np.log(p_out / p_in), atol=0.35)
  # The plain classifier on the same data, corrected with the known share, agrees.
  q = estimators.fit_logistic(x_in, x_mix).prob(grid)
  rho = estimators.rho_from_mixture(q, pi_mix, 0.5)
  assert np.all(rho[grid > 1.5] > 0)


def test_fit_temperature_recovers_the_generating_temperature():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(20_000, 5)) * 3
  p = estimators.softmax(logits, temperature=2.5)
  labels = (p.cumsum(1) > rng.random((len(p), 1))).argmax(1)
  assert estimators.fit_temperature(logits, labels) == pytest.approx(2.5, rel=0.1)


def test_score_transform_recovers_log_odds():
  rng = np.random.default_rng(0)
  s_in, s_out = rng.normal(0, 1, 5000), rng.normal(2, 1, 5000)  # log rho(s) = 2 s - 2
  transform = estimators.fit_score_transform(s_in, s_out)
  assert transform.scale == pytest.approx(2.0, abs=0.15)
  assert transform.shift == pytest.approx(-2.0, abs=0.15)


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


def test_outlier_exposure_loss_by_hand():
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  logits = jnp.array([[2.0, 0.0], [0.0, 0.0], [1.0, -1.0]])
  labels = jnp.array([0, 1, 0])
  is_outlier = jnp.array([0.0, 0.0, 1.0])
  log_p = special.log_softmax(np.asarray(logits), axis=1)
  expected = -(log_p[0, 0] + log_p[1, 1]) / 2 + 0.5 * -log_p[2].mean()
  assert float(scores.outlier_exposure_loss(logits, labels, is_outlier, 0.5)) == pytest.approx(
      expected, rel=1e-5)


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


# ------------------------------------------------------------------------------------------------
# Bad input: clear errors before compute.
# ------------------------------------------------------------------------------------------------
def test_bad_input_is_refused():
  s, out, correct = np.array([0.1, 0.5, 0.9]), np.array([0, 0, 1]), np.array([1, 0, 0])
  err = abstain.AbstainInputError
  assert issubclass(err, ValueError)
  with pytest.raises(err, match=r'budget .* must be in \[0, 1\], got 1.5'):
    scod.abstain_at_budget(s, 1.5)
  with pytest.raises(err, match=r'budget .* must be in \[0, 1\], got -0.1'):
    scod.scod_risk_at_budget(s, out, correct, 0.5, -0.1)
  with pytest.raises(err, match=r'c_fn .* must be in \[0, 1\], got -0.2'):
    scod.scod_risk_at_budget(s, out, correct, -0.2, 0.1)
  with pytest.raises(err, match=r'c_fn .* got 1.5'):
    scod.bayes_score(np.array([0.9]), np.array([1.0]), 1.5, 0.2)
  with pytest.raises(err, match=r'score must be 1-D.*\(3, 2\)'):
    scod.abstain_at_budget(np.ones((3, 2)), 0.1)
  with pytest.raises(err, match=r'is_outlier has 2 entries, expected 3'):
    metrics.auroc(s, out[:2])
  with pytest.raises(err, match='NaN or infinite'):
    metrics.auroc(np.array([0.1, np.nan, 0.3]), out)
  with pytest.raises(err, match=r'is_outlier must be 0/1 flags.*\[2\].*np.isin'):
    metrics.auroc(s, np.array([0, 1, 2]))  # class ids
  with pytest.raises(err, match=r'correct must be 0/1.*argmax'):
    scod.scod_risk(np.zeros(3), out, np.array([3, 1, 0]), 0.5)
  with pytest.raises(err, match='rows must sum to one; row 1'):
    scores.msp(np.array([[0.5, 0.5], [0.9, 0.3]]))
  with pytest.raises(err, match='logits'):
    scores.msp(np.array([[2.0, -1.0]]))
  with pytest.raises(err, match=r'max_prob must be probabilities in \[0, 1\]'):
    scod.plugin_score(np.array([1.2, 0.5]), np.array([0.1, 0.1]), 0.5)
  with pytest.raises(err, match='rho must be non-negative'):
    scod.plugin_score(np.array([0.9, 0.5]), np.array([0.1, -0.1]), 0.5)
  with pytest.raises(err, match=r'rho has 1 entries, expected 2'):
    scod.bayes_score(np.array([0.9, 0.5]), np.array([0.1]), 0.5, 0.2)
  with pytest.raises(err, match='needs both inliers and outliers; is_outlier has no outliers'):
    scod.scod_risk(np.zeros(3), np.zeros(3), np.ones(3), 0.5)
  with pytest.raises(err, match=r'pi_mix .* must be in \(0, 1\]'):
    estimators.rho_from_mixture(np.array([0.5]), 0.0, 0.5)
  with pytest.raises(err, match=r'prob_outlier must be probabilities'):
    estimators.rho_from_binary(np.array([1.5]), 0.5)
  with pytest.raises(err, match='labels must be in'):
    estimators.fit_temperature(np.zeros((2, 3)), np.array([0, 3]))
  with pytest.raises(err, match='temperature must be positive'):
    estimators.max_prob(np.zeros((2, 3)), 0.0)


def test_splits_by_class():
  rng = np.random.default_rng(0)
  n = 2000
  data = {'inputs': rng.normal(size=(n, 4)).astype(np.float32),
          'label': rng.integers(0, 10, n).astype(np.int32)}
  test = {'inputs': rng.normal(size=(400, 4)).astype(np.float32),
          'label': rng.integers(0, 10, 400).astype(np.int32)}
  spec = type('Spec', (), dict(inlier_classes=(0, 1, 2, 3, 4, 5), aux_classes=(6, 7),
                               test_outlier_classes=(8, 9), val_fraction=0.2, wild_fraction=0.2,
                               aux_val_fraction=0.25, wild_val_fraction=0.25))
  parts = splits.build(data, test, spec, wild_pi=0.3, seed=0)
  assert parts['wild_pi'] == pytest.approx(0.3, abs=0.01)
  assert set(np.unique(parts['train_in']['label'])) == set(range(6))
  test_out = parts['test']['is_outlier']
  assert np.isin(test['label'], (8, 9)).sum() == test_out.sum()
  assert not parts['train_in']['is_outlier'].any() and parts['aux_val']['is_outlier'].all()
  spec.aux_classes = (5, 6)
  with pytest.raises(abstain.AbstainInputError, match='must be disjoint'):
    splits.build(data, test, spec, wild_pi=0.3, seed=0)

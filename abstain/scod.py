"""The SCOD problem: selective classification with out-of-distribution detection.

Inliers (x, y) ~ P_in, outliers x ~ P_out, test mixture P_te = (1 - pi) P_in + pi P_out. A
classifier h and a rejector r (r = 1: abstain). The risk of the pair (Narasimhan et al.) is

    R(h, r) = (1 - c_fn) P_in(y != h(x), r(x) = 0) + c_fn P_out(r(x) = 0)
    subject to the budget  P_te(r(x) = 1) <= b_rej.

Bayes-optimal: h*(x) = argmax_y P_in(y | x) and, with m(x) = max_y P_in(y | x) and
rho(x) = p_out(x) / p_in(x), the rejector

    r*(x) = 1  iff  (1 - c_fn)(1 - m(x)) + (c_fn - lambda pi) rho(x) > lambda (1 - pi),

lambda >= 0 set so the budget binds: a half-plane in (1 - m, rho). Equivalently (a fractional
knapsack: the cost of accepting x per unit of budget that rejecting it spends) reject the b_rej
fraction of P_te with the largest

    T(x) = [(1 - c_fn)(1 - m(x)) + c_fn rho(x)] / [(1 - pi) + pi rho(x)],

and lambda is T's value at that quantile. `bayes_score` is T; `abstain_at_budget` takes the top
fraction of any score.

Plug-in rules replace m and rho by estimates and, since pi and lambda are unknown, rank by
(1 - c_fn)(1 - m_hat) + slope * rho_hat with the slope (= c_fn - lambda pi) tuned on validation
data per budget (`tune_slope`, or `tune_slope_unlabelled` from inliers and an unlabelled mixture).

Other papers (Franc et al. 2024, SIRC's evaluation) constrain the inlier acceptance rate (TPR)
instead of the total abstention rate. A rule with TPR t and outlier acceptance rate FPR f
abstains on P_te(r = 1) = (1 - pi)(1 - t) + pi (1 - f) of the test mixture, so each point of one
form is a point of the other; the Bayes rule of the TPR form is (1 - c_fn)(1 - m) + c_fn rho > mu
(the slope does not move with the constraint, as no budget is spent on outliers), the budget
form's with lambda pi = 0. `metrics.joint_risk_at_tpr` reports both coordinates.
"""

from __future__ import annotations

import numpy as np

from abstain import checks

# Angles of the slope search: score = cos(a) (1 - c_fn)(1 - m) + sin(a) rho / scale, a in
# [-pi/2, pi/2] (negative slopes are Bayes-optimal when lambda pi > c_fn: small budgets, many
# outliers); `scale` puts rho on the scale of 1 - m.
DEFAULT_ANGLES = np.linspace(-np.pi / 2, np.pi / 2, 81)


def abstain_at_budget(score, budget) -> np.ndarray:
  """Rejection probabilities (N,) abstaining on exactly the `budget` fraction with the largest score.

  Examples tied at the threshold share the remainder (each rejected with the same probability),
  so the expected abstention rate is exactly `budget` and no tie is broken arbitrarily.
  """
  score = checks.check_scores(score, 'score')
  budget = checks.check_budget(budget)
  n = len(score)
  k = budget * n
  if k >= n:
    return np.ones(n)
  threshold = np.sort(score)[::-1][int(np.floor(k))]
  above = score > threshold
  tied = score == threshold
  remainder = k - above.sum()
  return above.astype(np.float64) + tied * (remainder / tied.sum())


def scod_risk(reject, is_outlier, correct, c_fn) -> float:
  """(1 - c_fn) P_in(misclassified, accepted) + c_fn P_out(accepted), from a test sample.

  reject: (N,) rejection probabilities in [0, 1] (0/1 for a deterministic rejector);
  is_outlier: (N,) 0/1; correct: (N,) 0/1, whether h is right (ignored on outliers).
  """
  reject = checks.check_probability(reject, 'reject')
  n = len(reject)
  is_outlier = checks.check_outlier_flags(is_outlier, n, 'reject')
  correct = checks.check_correct(correct, n, 'reject')
  c_fn = checks.check_cost(c_fn)
  checks.check_both_groups(is_outlier, 'The SCOD risk')
  accept = 1.0 - reject
  inlier_error = np.mean(accept[~is_outlier] * (~correct[~is_outlier]))
  outlier_accepted = np.mean(accept[is_outlier])
  return float((1 - c_fn) * inlier_error + c_fn * outlier_accepted)


def scod_risk_at_budget(score, is_outlier, correct, c_fn, budget) -> float:
  """The SCOD risk of abstaining on the `budget` fraction of the sample with the largest score."""
  return scod_risk(abstain_at_budget(score, budget), is_outlier, correct, c_fn)


def bayes_score(max_prob, rho, c_fn, pi) -> np.ndarray:
  """T(x): the Bayes rule at any budget abstains on the largest values (see the module doc).

  max_prob: (N,) max_y P_in(y | x); rho: (N,) p_out(x) / p_in(x); pi: the outlier fraction of
  the test mixture.
  """
  m = checks.check_probability(max_prob, 'max_prob')
  rho = checks.check_nonnegative(rho, 'rho', len(m), 'max_prob')
  c_fn = checks.check_cost(c_fn)
  pi = checks.check_unit(pi, 'pi (the outlier fraction of the test mixture)', open_high=True)
  return ((1 - c_fn) * (1 - m) + c_fn * rho) / ((1 - pi) + pi * rho)


def bayes_lambda(max_prob, rho, c_fn, pi, budget) -> float:
  """The Lagrange multiplier lambda that makes the budget bind on this (test) sample."""
  t = bayes_score(max_prob, rho, c_fn, pi)
  budget = checks.check_budget(budget)
  if budget >= 1:
    return 0.0
  return float(np.sort(t)[::-1][int(np.floor(budget * len(t)))])


def half_plane(lam: float, c_fn: float, pi: float) -> tuple[float, float, float]:
  """(a, b, c) with the Bayes rule rejecting where a (1 - m) + b rho > c (the boundary a line)."""
  c_fn = checks.check_cost(c_fn)
  return (1 - c_fn, c_fn - lam * pi, lam * (1 - pi))


def plugin_score(max_prob, rho, c_fn, slope=None) -> np.ndarray:
  """(1 - c_fn)(1 - m_hat) + slope * rho_hat; slope None is c_fn (the TPR form's Bayes slope)."""
  m = checks.check_probability(max_prob, 'max_prob')
  rho = checks.check_nonnegative(rho, 'rho', len(m), 'max_prob')
  c_fn = checks.check_cost(c_fn)
  slope = c_fn if slope is None else float(slope)
  if not np.isfinite(slope):
    raise checks.AbstainInputError(f'slope must be finite, got {slope}.')
  return (1 - c_fn) * (1 - m) + slope * rho


def _rho_scale(rho: np.ndarray) -> float:
  """A robust scale of rho (its inter-quantile range), so that angles cover both regimes."""
  lo, hi = np.quantile(rho, [0.1, 0.9])
  scale = hi - lo
  return float(scale if scale > 0 else max(np.max(rho), 1e-12))


def _slopes(rho, c_fn, angles) -> list[tuple[float, float]]:
  """(weight on (1 - c_fn)(1 - m), weight on rho) for each angle."""
  scale = _rho_scale(rho)
  return [(float(np.cos(a)), float(np.sin(a)) / scale) for a in np.asarray(angles, np.float64)]


def _to_slope(weights: tuple[float, float]) -> float:
  """The slope of the equivalent plug-in score (weights (cos, sin) -> sin / cos)."""
  wm, wr = weights
  return float(wr / wm) if abs(wm) > 1e-12 else float(np.sign(wr) * 1e12)


def tune_slope(max_prob, rho, is_outlier, correct, c_fn, budget,
               angles=DEFAULT_ANGLES) -> float:
  """The plug-in slope with the lowest SCOD risk at `budget` on a labelled validation mixture.

  Returns the slope for `plugin_score`; +-1e12 stands for "rank by rho alone".
  """
  m = checks.check_probability(max_prob, 'max_prob')
  rho = checks.check_nonnegative(rho, 'rho', len(m), 'max_prob')
  is_outlier = checks.check_outlier_flags(is_outlier, len(m), 'max_prob')
  correct = checks.check_correct(correct, len(m), 'max_prob')
  c_fn, budget = checks.check_cost(c_fn), checks.check_budget(budget)
  best, best_risk = None, np.inf
  for wm, wr in _slopes(rho, c_fn, angles):
    score = wm * (1 - c_fn) * (1 - m) + wr * rho
    risk = scod_risk(abstain_at_budget(score, budget), is_outlier, correct, c_fn)
    if risk < best_risk - 1e-12:
      best, best_risk = (wm, wr), risk
  return _to_slope(best)


def mixture_risk(reject_in, correct_in, reject_mix, c_fn, pi_mix) -> float:
  """The SCOD risk estimated from inliers and an *unlabelled* mixture with outlier share pi_mix.

  P_mix(accept) = (1 - pi_mix) P_in(accept) + pi_mix P_out(accept) gives P_out(accept) without
  outlier labels (clipped to [0, 1]); the inlier term comes from the labelled inliers.
  """
  reject_in = checks.check_probability(reject_in, 'reject_in')
  correct_in = checks.check_correct(correct_in, len(reject_in), 'reject_in')
  reject_mix = checks.check_probability(reject_mix, 'reject_mix')
  c_fn = checks.check_cost(c_fn)
  pi_mix = checks.check_unit(pi_mix, 'pi_mix (the outlier share of the mixture)', open_low=True)
  accept_in = 1 - reject_in
  out_accept = (np.mean(1 - reject_mix) - (1 - pi_mix) * np.mean(accept_in)) / pi_mix
  out_accept = float(np.clip(out_accept, 0.0, 1.0))
  return float((1 - c_fn) * np.mean(accept_in * ~correct_in) + c_fn * out_accept)


def mixture_risk_at_budget(score_in, correct_in, score_mix, c_fn, budget, pi_mix) -> float:
  """`mixture_risk` of abstaining on the `budget` fraction of the mixture with the largest score;
  the same threshold applies to the inliers."""
  score_in = checks.check_scores(score_in, 'score_in')
  score_mix = checks.check_scores(score_mix, 'score_mix')
  budget = checks.check_budget(budget)
  r_mix = abstain_at_budget(score_mix, budget)
  if budget >= 1:
    r_in = np.ones(len(score_in))
  else:
    threshold = np.sort(score_mix)[::-1][int(np.floor(budget * len(score_mix)))]
    r_in = (score_in > threshold).astype(np.float64)
  return mixture_risk(r_in, correct_in, r_mix, c_fn, pi_mix)


def tune_slope_unlabelled(max_prob_in, rho_in, correct_in, max_prob_mix, rho_mix, c_fn, budget,
                          pi_mix, angles=DEFAULT_ANGLES) -> float:
  """`tune_slope` without outlier labels: inliers plus an unlabelled mixture as the test proxy.

  The threshold is the budget's quantile on the mixture; the risk is `mixture_risk`.
  """
  m_in = checks.check_probability(max_prob_in, 'max_prob_in')
  rho_in = checks.check_nonnegative(rho_in, 'rho_in', len(m_in), 'max_prob_in')
  correct_in = checks.check_correct(correct_in, len(m_in), 'max_prob_in')
  m_mix = checks.check_probability(max_prob_mix, 'max_prob_mix')
  rho_mix = checks.check_nonnegative(rho_mix, 'rho_mix', len(m_mix), 'max_prob_mix')
  c_fn, budget = checks.check_cost(c_fn), checks.check_budget(budget)
  best, best_risk = None, np.inf
  for wm, wr in _slopes(rho_mix, c_fn, angles):
    risk = mixture_risk_at_budget(wm * (1 - c_fn) * (1 - m_in) + wr * rho_in, correct_in,
                                  wm * (1 - c_fn) * (1 - m_mix) + wr * rho_mix, c_fn, budget,
                                  pi_mix)
    if risk < best_risk - 1e-12:
      best, best_risk = (wm, wr), risk
  return _to_slope(best)

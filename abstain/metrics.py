"""SCOD metrics of an abstain score (higher = abstain sooner) on a labelled test mixture.

- risk_at_budgets: the SCOD risk at each abstention budget (scod.scod_risk).
- risk_coverage_curve / aurc: the selective risk (accepted errors: misclassified inliers and
  accepted outliers, over the accepted) at every coverage k/N, and its mean over coverages.
- auroc, fpr_at_tpr: the OOD part (outliers the positives; FPR@95: outliers accepted when 95% of
  inliers are).
- selective_accuracy: accepted examples that are correctly classified inliers, at a budget.
- joint_risk_at_tpr: Franc et al.'s TPR-constrained form, beta selective risk + (1 - beta) FPR,
  with the abstention rate that the same rule spends (the budget form's coordinate).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import stats

from abstain import checks
from abstain import scod


def _inputs(score, is_outlier, correct=None):
  score = checks.check_scores(score, 'score')
  is_outlier = checks.check_outlier_flags(is_outlier, len(score))
  if correct is None:
    return score, is_outlier
  return score, is_outlier, checks.check_correct(correct, len(score))


def risk_at_budgets(score, is_outlier, correct, c_fn, budgets) -> np.ndarray:
  budgets = checks.check_budgets(budgets)
  return np.array([scod.scod_risk_at_budget(score, is_outlier, correct, c_fn, b)
                   for b in budgets])


@dataclasses.dataclass
class RiskCoverage:
  coverage: np.ndarray  # (N + 1,): k / N accepted, lowest abstain scores first
  risk: np.ndarray      # (N + 1,): accepted errors / accepted (0 at coverage 0)

  @property
  def aurc(self) -> float:
    """The mean selective risk over coverages 1/N, ..., 1 (the area under the curve)."""
    return float(np.mean(self.risk[1:]))

  def risk_at(self, coverage) -> np.ndarray | float:
    cov = np.atleast_1d(np.asarray(coverage, np.float64))
    for c in cov:
      checks.check_unit(c, 'coverage')
    out = np.interp(cov, self.coverage, self.risk)
    return float(out[0]) if np.ndim(coverage) == 0 else out


def risk_coverage_curve(score, is_outlier, correct) -> RiskCoverage:
  """Selective risk at every coverage; ties accepted as a group (linear inside it)."""
  score, is_outlier, correct = _inputs(score, is_outlier, correct)
  n = len(score)
  order = np.argsort(score, kind='stable')
  error = (is_outlier | ~correct)[order].astype(np.float64)
  s = score[order]
  boundaries = np.concatenate([[0], np.nonzero(np.diff(s) != 0)[0] + 1, [n]])
  cum = np.concatenate([[0.0], np.cumsum(error)])
  ks = np.arange(n + 1)
  errors = np.interp(ks, boundaries, cum[boundaries])
  risk = np.divide(errors, ks, out=np.zeros(n + 1), where=ks > 0)
  return RiskCoverage(coverage=ks / n, risk=risk)


def aurc(score, is_outlier, correct) -> float:
  return risk_coverage_curve(score, is_outlier, correct).aurc


def auroc(score, is_outlier) -> float:
  """P(score of an outlier > score of an inlier), ties counting one half (Mann-Whitney)."""
  score, is_outlier = _inputs(score, is_outlier)
  checks.check_both_groups(is_outlier, 'AUROC')
  ranks = stats.rankdata(score)
  n_out, n_in = int(is_outlier.sum()), int((~is_outlier).sum())
  return float((ranks[is_outlier].sum() - n_out * (n_out + 1) / 2) / (n_out * n_in))


def fpr_at_tpr(score, is_outlier, tpr: float = 0.95) -> float:
  """The fraction of outliers accepted by the loosest threshold accepting >= tpr of inliers."""
  score, is_outlier = _inputs(score, is_outlier)
  checks.check_both_groups(is_outlier, 'FPR@TPR')
  tpr = checks.check_unit(tpr, 'tpr', open_low=True)
  inl = np.sort(score[~is_outlier])
  threshold = inl[int(np.ceil(tpr * len(inl))) - 1]  # accept score <= threshold
  return float(np.mean(score[is_outlier] <= threshold))


def selective_accuracy(score, is_outlier, correct, budget) -> float:
  """Accepted examples that are correctly classified inliers, over all accepted."""
  score, is_outlier, correct = _inputs(score, is_outlier, correct)
  accept = 1 - scod.abstain_at_budget(score, budget)
  if accept.sum() <= 0:
    raise checks.AbstainInputError('selective_accuracy: a budget of 1 accepts nothing.')
  return float(np.sum(accept * (~is_outlier & correct)) / accept.sum())


def joint_risk_at_tpr(score, is_outlier, correct, tpr: float = 0.95,
                      beta: float = 0.5) -> dict[str, float]:
  """beta selective risk + (1 - beta) FPR with the threshold accepting `tpr` of inliers.

  Returns the joint risk, its parts, and `abstention_rate` = (1 - pi)(1 - TPR) + pi (1 - FPR):
  the budget under which the same rule is a point of the budget-constrained form.
  """
  score, is_outlier, correct = _inputs(score, is_outlier, correct)
  checks.check_both_groups(is_outlier, 'The joint risk')
  tpr = checks.check_unit(tpr, 'tpr', open_low=True)
  beta = checks.check_unit(beta, 'beta')
  inl = np.sort(score[~is_outlier])
  threshold = inl[int(np.ceil(tpr * len(inl))) - 1]
  accept_in = score[~is_outlier] <= threshold
  selective_risk = float(np.mean(~correct[~is_outlier][accept_in]))
  fpr = float(np.mean(score[is_outlier] <= threshold))
  pi = float(is_outlier.mean())
  true_tpr = float(accept_in.mean())
  return {'joint_risk': beta * selective_risk + (1 - beta) * fpr,
          'selective_risk': selective_risk, 'fpr': fpr, 'tpr': true_tpr,
          'abstention_rate': (1 - pi) * (1 - true_tpr) + pi * (1 - fpr)}

"""Plug-in estimates of max_y P_in(y | x) and of the density ratio rho(x) = p_out(x) / p_in(x).

    m_hat   = max_prob(logits, temperature)             # temperature from fit_temperature
    rho_hat = rho_from_score(energy, transform)          # (i) black box: monotone transform
    rho_hat = rho_from_binary(q, outlier_share)          # (ii) inliers vs auxiliary outliers
    rho_hat = rho_from_mixture(q, pi_mix, mix_share)     # (iii) inliers vs a wild mixture
    fit = fit_corrected_sigmoid(phi_in, phi_mix); rho_hat = fit.rho(phi)   # (iii) corrected sigmoid

q is the binary classifier's P(second class | x) as trained: `*_share` is the second class's
fraction of its training set, which the odds are corrected for. The mixture correction: with
balanced odds o(x) = p_mix(x) / p_in(x) = (1 - pi_mix) + pi_mix rho(x),

    rho(x) = max(0, o(x) - (1 - pi_mix)) / pi_mix.

The corrected sigmoid (Franc et al. 2024) models the balanced inlier-vs-mixture odds as
p_in / p_mix = s / (1 + |a| s) with s = exp(f(x)); then |a| = 1 - pi_mix and rho = 1 / (pi_mix s):
fitted by binary cross-entropy, it estimates the mixture proportion too. |a| = sigmoid(alpha)
here, which keeps it in (0, 1).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import optimize
from scipy import special

from abstain import checks

EPS = 1e-6


# ------------------------------------------------------------------------------------------------
# max P_in(y | x), temperature-scaled.
# ------------------------------------------------------------------------------------------------
def softmax(logits, temperature: float = 1.0) -> np.ndarray:
  logits = checks.check_logits(logits)
  if not temperature > 0:
    raise checks.AbstainInputError(f'temperature must be positive, got {temperature}.')
  return special.softmax(logits / temperature, axis=1)


def max_prob(logits, temperature: float = 1.0) -> np.ndarray:
  """max_y softmax(logits / temperature): the plug-in for max_y P_in(y | x)."""
  return softmax(logits, temperature).max(1)


def fit_temperature(logits, labels, bounds=(0.05, 20.0)) -> float:
  """The temperature minimising the negative log-likelihood of `labels` (held-out inliers)."""
  logits = checks.check_logits(logits)
  labels = np.asarray(labels)
  if labels.shape != (len(logits),) or not np.issubdtype(labels.dtype, np.integer):
    raise checks.AbstainInputError(f'labels must be ({len(logits)},) integers, got '
                                   f'{labels.shape} {labels.dtype}.')
  if labels.min() < 0 or labels.max() >= logits.shape[1]:
    raise checks.AbstainInputError(f'labels must be in [0, {logits.shape[1]}).')

  def nll(log_t):
    z = logits / np.exp(log_t)
    return float(np.mean(special.logsumexp(z, axis=1) - z[np.arange(len(z)), labels]))

  res = optimize.minimize_scalar(nll, bounds=np.log(bounds), method='bounded')
  return float(np.exp(res.x))


# ------------------------------------------------------------------------------------------------
# Logistic regression (class-balanced, L2), the workhorse of the small fits.
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Logistic:
  """logit P(positive | x) = features @ w + b (balanced: equal total weight per class)."""
  w: np.ndarray
  b: float

  def logit(self, features) -> np.ndarray:
    return _features(features, len(self.w)) @ self.w + self.b

  def prob(self, features) -> np.ndarray:
    return special.expit(self.logit(features))


def _features(features, dim: int | None = None) -> np.ndarray:
  arr = np.asarray(features, np.float64)
  if arr.ndim == 1:
    arr = arr[:, None]
  if arr.ndim != 2 or arr.shape[0] == 0:
    raise checks.AbstainInputError(f'features must be (examples, dims), got {arr.shape}.')
  if dim is not None and arr.shape[1] != dim:
    raise checks.AbstainInputError(f'features have {arr.shape[1]} dims, expected {dim}.')
  if not np.all(np.isfinite(arr)):
    raise checks.AbstainInputError('features must be finite (NaN or inf found).')
  return arr


def fit_logistic(negatives, positives, l2: float = 1e-4) -> Logistic:
  """Class-balanced logistic regression of positives (1) against negatives (0)."""
  x0, x1 = _features(negatives), _features(positives)
  if x0.shape[1] != x1.shape[1]:
    raise checks.AbstainInputError(f'negatives have {x0.shape[1]} dims, positives '
                                   f'{x1.shape[1]}.')
  x = np.concatenate([x0, x1])
  y = np.concatenate([np.zeros(len(x0)), np.ones(len(x1))])
  weight = np.where(y == 1, 0.5 / len(x1), 0.5 / len(x0))
  d = x.shape[1]

  def loss_and_grad(theta):
    w, b = theta[:d], theta[d]
    z = x @ w + b
    loss = np.sum(weight * (np.logaddexp(0, z) - y * z)) + l2 * w @ w
    g = weight * (special.expit(z) - y)
    return loss, np.concatenate([x.T @ g + 2 * l2 * w, [g.sum()]])

  res = optimize.minimize(loss_and_grad, np.zeros(d + 1), jac=True, method='L-BFGS-B')
  return Logistic(w=res.x[:d], b=float(res.x[d]))


# ------------------------------------------------------------------------------------------------
# rho(x).
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class ScoreTransform:
  """rho_hat = exp(scale * score + shift): a monotone transform of a black-box OOD score."""
  scale: float = 1.0
  shift: float = 0.0

  def rho(self, score) -> np.ndarray:
    score = checks.check_scores(score, 'score')
    return np.exp(np.clip(self.scale * score + self.shift, -50, 50))


def rho_from_score(score, transform: ScoreTransform | None = None) -> np.ndarray:
  """(i) rho from an OOD score (higher = more outlier-like): exp(score) unless a fit is given."""
  return (transform or ScoreTransform()).rho(score)


def fit_score_transform(score_in, score_out) -> ScoreTransform:
  """The transform that makes exp(.) the balanced odds of outlier vs inlier (1-D logistic)."""
  s_in = checks.check_scores(score_in, 'score_in')
  s_out = checks.check_scores(score_out, 'score_out')
  scale = np.std(np.concatenate([s_in, s_out])) or 1.0
  fit = fit_logistic(s_in / scale, s_out / scale, l2=0.0)
  return ScoreTransform(scale=float(fit.w[0] / scale), shift=fit.b)


def _odds(q, share, name) -> np.ndarray:
  q = np.clip(checks.check_probability(q, name), EPS, 1 - EPS)
  share = checks.check_unit(share, f'the share of the second class in the training set of {name}',
                            open_low=True, open_high=True)
  return q / (1 - q) * (1 - share) / share


def rho_from_binary(prob_outlier, outlier_share: float) -> np.ndarray:
  """(ii) rho from a classifier of inliers vs auxiliary outliers: its odds, class-balanced.

  prob_outlier: (N,) P(outlier | x) as trained; outlier_share: n_out / (n_in + n_out) in its
  training set (0.5 when balanced).
  """
  return _odds(prob_outlier, outlier_share, 'prob_outlier')


def rho_from_mixture(prob_mixture, pi_mix: float, mixture_share: float) -> np.ndarray:
  """(iii) rho from a classifier of inliers vs a wild mixture, with the mixture correction.

  prob_mixture: (N,) P(mixture | x); pi_mix: the outlier share of the mixture; mixture_share:
  n_mix / (n_in + n_mix) in the classifier's training set.
  """
  pi_mix = checks.check_unit(pi_mix, 'pi_mix (the outlier share of the mixture)', open_low=True)
  odds = _odds(prob_mixture, mixture_share, 'prob_mixture')
  return np.maximum(0.0, odds - (1 - pi_mix)) / pi_mix


@dataclasses.dataclass
class CorrectedSigmoid:
  """p_in / p_mix = s / (1 + |a| s), s = exp(phi @ w + b), |a| = sigmoid(alpha) = 1 - pi_mix."""
  w: np.ndarray
  b: float
  alpha: float

  @property
  def pi_mix(self) -> float:
    """The estimated outlier share of the mixture, 1 - |a|."""
    return float(special.expit(-self.alpha))

  def log_s(self, features) -> np.ndarray:
    return _features(features, len(self.w)) @ self.w + self.b

  def rho(self, features) -> np.ndarray:
    """rho_hat = 1 / (pi_mix s)."""
    return np.exp(np.clip(-self.log_s(features) - np.log(self.pi_mix), -50, 50))


def _csig_logit(f, alpha):
  """logit of P(inlier | x) under balanced classes: log s - log(1 + |a| s)."""
  log_a = -np.logaddexp(0, -alpha)  # log sigmoid(alpha)
  return f - np.logaddexp(0, f + log_a), log_a


def fit_corrected_sigmoid(features_in, features_mix, l2: float = 1e-4,
                          init_pi_mix: float = 0.5) -> CorrectedSigmoid:
  """Fits the corrected sigmoid by class-balanced binary cross-entropy, inliers vs the mixture."""
  x_in, x_mix = _features(features_in), _features(features_mix)
  if x_in.shape[1] != x_mix.shape[1]:
    raise checks.AbstainInputError(f'features_in have {x_in.shape[1]} dims, features_mix '
                                   f'{x_mix.shape[1]}.')
  init_pi_mix = checks.check_unit(init_pi_mix, 'init_pi_mix', open_low=True, open_high=True)
  x = np.concatenate([x_in, x_mix])
  y = np.concatenate([np.ones(len(x_in)), np.zeros(len(x_mix))])  # 1 = inlier
  weight = np.where(y == 1, 0.5 / len(x_in), 0.5 / len(x_mix))
  d = x.shape[1]

  def loss_and_grad(theta):
    w, b, alpha = theta[:d], theta[d], theta[d + 1]
    f = x @ w + b
    z, log_a = _csig_logit(f, alpha)
    loss = np.sum(weight * (np.logaddexp(0, z) - y * z)) + l2 * w @ w
    dz = weight * (special.expit(z) - y)
    sig = special.expit(f + log_a)            # d softplus(f + log_a) / d(f + log_a)
    df = dz * (1 - sig)
    dalpha = np.sum(dz * -sig) * (1 - np.exp(log_a))  # d log sigmoid(alpha) / d alpha
    return loss, np.concatenate([x.T @ df + 2 * l2 * w, [df.sum(), dalpha]])

  theta0 = np.concatenate([np.zeros(d + 1), [np.log((1 - init_pi_mix) / init_pi_mix)]])
  res = optimize.minimize(loss_and_grad, theta0, jac=True, method='L-BFGS-B')
  return CorrectedSigmoid(w=res.x[:d], b=float(res.x[d]), alpha=float(res.x[d + 1]))

"""The closed-form check: two Gaussian inlier classes and a Gaussian outlier in 2-D.

P_in(y | x) and rho(x) = p_out(x) / p_in(x) are known exactly, so the Bayes rule and its risk are
exact; plug-in estimates come from logistic regressions on quadratic features fitted to samples
of n per class. The default densities are Franc et al.'s (ECCV 2024) synthetic check:

    inliers   N((-8, 0), 30 [[3, 2], [2, 3]]),  N((8, 0), 30 [[3, -2], [-2, 3]])  (equal priors)
    outliers  N((0, -5), 60 [[0.5, 0.1], [0.1, 3]])
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import special
from scipy import stats

from abstain import checks
from abstain import estimators
from abstain import scod

INLIER_MEANS = ((-8.0, 0.0), (8.0, 0.0))
INLIER_COVS = (((90.0, 60.0), (60.0, 90.0)), ((90.0, -60.0), (-60.0, 90.0)))
OUTLIER_MEAN = (0.0, -5.0)
OUTLIER_COV = ((30.0, 6.0), (6.0, 180.0))


@dataclasses.dataclass(frozen=True)
class GaussianSCOD:
  """Inlier classes N(means[k], covs[k]) with equal priors; outliers N(outlier_mean, outlier_cov)."""
  means: tuple = INLIER_MEANS
  covs: tuple = INLIER_COVS
  outlier_mean: tuple = OUTLIER_MEAN
  outlier_cov: tuple = OUTLIER_COV

  def sample(self, n_per_class: int, n_outliers: int, rng: np.random.Generator):
    """(x (N, 2), y (N,) with -1 for outliers, is_outlier (N,)) in a random order."""
    if n_per_class < 0 or n_outliers < 0:
      raise checks.AbstainInputError(f'need n_per_class >= 0 and n_outliers >= 0, got '
                                     f'{n_per_class}, {n_outliers}.')
    xs = [rng.multivariate_normal(m, c, n_per_class) for m, c in zip(self.means, self.covs)]
    xs.append(rng.multivariate_normal(self.outlier_mean, self.outlier_cov, n_outliers))
    y = np.concatenate([np.full(n_per_class, k) for k in range(len(self.means))]
                       + [np.full(n_outliers, -1)])
    order = rng.permutation(len(y))
    return np.concatenate(xs)[order], y[order], (y < 0)[order]

  def sample_mixture(self, n: int, pi: float, rng: np.random.Generator):
    """n draws of (1 - pi) P_in + pi P_out (inlier classes equally likely): (x, y, is_outlier)."""
    pi = checks.check_unit(pi, 'pi')
    counts = rng.multinomial(n, [(1 - pi) / len(self.means)] * len(self.means) + [pi])
    xs = [rng.multivariate_normal(m, c, k) for m, c, k in zip(self.means, self.covs, counts)]
    xs.append(rng.multivariate_normal(self.outlier_mean, self.outlier_cov, counts[-1]))
    y = np.concatenate([np.full(k, i) for i, k in enumerate(counts[:-1])]
                       + [np.full(counts[-1], -1)])
    order = rng.permutation(n)
    return np.concatenate(xs)[order], y[order], (y < 0)[order]

  def _class_logpdf(self, x) -> np.ndarray:
    return np.stack([stats.multivariate_normal(m, c).logpdf(x)
                     for m, c in zip(self.means, self.covs)], axis=1).reshape(len(x), -1)

  def posterior(self, x) -> np.ndarray:
    """P_in(y | x): (N, K)."""
    return special.softmax(self._class_logpdf(x), axis=1)

  def log_rho(self, x) -> np.ndarray:
    log_in = special.logsumexp(self._class_logpdf(x), axis=1) - np.log(len(self.means))
    return stats.multivariate_normal(self.outlier_mean, self.outlier_cov).logpdf(x) - log_in

  def rho(self, x) -> np.ndarray:
    return np.exp(np.clip(self.log_rho(x), -700, 700))


def quadratic_features(x, scale: float = 10.0) -> np.ndarray:
  """[x1, x2, x1^2, x1 x2, x2^2] of x / scale: log-ratios of Gaussians are quadratic."""
  z = np.asarray(x, np.float64) / scale
  return np.stack([z[:, 0], z[:, 1], z[:, 0] ** 2, z[:, 0] * z[:, 1], z[:, 1] ** 2], axis=1)


@dataclasses.dataclass
class PlugIn:
  """Estimates fitted on samples: m_hat from a class logistic regression, rho_hat three ways."""
  classifier: estimators.Logistic
  outlier_classifier: estimators.Logistic       # inliers vs auxiliary outliers (balanced)
  mixture_classifier: estimators.Logistic       # inliers vs the wild mixture (balanced)
  corrected: estimators.CorrectedSigmoid        # the corrected sigmoid on the same pair
  pi_mix: float

  def max_prob(self, x) -> np.ndarray:
    p1 = self.classifier.prob(quadratic_features(x))
    return np.maximum(p1, 1 - p1)

  def predict(self, x) -> np.ndarray:
    return (self.classifier.prob(quadratic_features(x)) > 0.5).astype(int)

  def rho(self, x, kind: str = 'auxiliary') -> np.ndarray:
    phi = quadratic_features(x)
    if kind == 'auxiliary':
      return estimators.rho_from_binary(self.outlier_classifier.prob(phi), 0.5)
    if kind == 'mixture':
      return estimators.rho_from_mixture(self.mixture_classifier.prob(phi), self.pi_mix, 0.5)
    if kind == 'corrected_sigmoid':
      return self.corrected.rho(phi)
    raise checks.AbstainInputError(f'Unknown rho estimate {kind!r}; use auxiliary, mixture or '
                                   'corrected_sigmoid.')


def fit_plugin(problem: GaussianSCOD, n_per_class: int, pi_mix: float,
               rng: np.random.Generator) -> PlugIn:
  """Fits the estimates on n per inlier class, n auxiliary outliers and a wild mixture of 2n."""
  x, y, out = problem.sample(n_per_class, n_per_class, rng)
  x_in, y_in, x_out = x[~out], y[~out], x[out]
  x_wild, _, _ = problem.sample_mixture(2 * n_per_class, pi_mix, rng)
  phi_in = quadratic_features(x_in)
  return PlugIn(
      classifier=estimators.fit_logistic(phi_in[y_in == 0], phi_in[y_in == 1]),
      outlier_classifier=estimators.fit_logistic(phi_in, quadratic_features(x_out)),
      mixture_classifier=estimators.fit_logistic(phi_in, quadratic_features(x_wild)),
      corrected=estimators.fit_corrected_sigmoid(phi_in, quadratic_features(x_wild)),
      pi_mix=pi_mix)

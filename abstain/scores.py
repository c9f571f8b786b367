"""Baseline abstention scores from both literatures. Every score is an *abstain* score: higher
means abstain sooner (rank with scod.abstain_at_budget).

    msp(probs), max_logit(logits), energy(logits)       post-hoc, from the classifier alone
    odin(logits_fn, inputs)                             temperature + input perturbation (jax)
    Mahalanobis.fit(features, labels).score(features)   tied-covariance class Gaussians
    outlier_exposure_loss(...)                          the OE training loss (jax); score = msp
    Sirc.fit(s2_inliers).score(msp, s2)                 SIRC (Xia and Bouganis 2022)
    linear_double(s1, s2, angle), tune_linear_double    cos(a) s1 + sin(a) s2
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
from scipy import special

from abstain import checks
from abstain import scod


def msp(probs) -> np.ndarray:
  """1 - max_y p(y | x): learning to reject's rule (Chow)."""
  return 1.0 - checks.check_probs(probs).max(1)


def max_logit(logits) -> np.ndarray:
  return -checks.check_logits(logits).max(1)


def energy(logits, temperature: float = 1.0) -> np.ndarray:
  """-T logsumexp(logits / T) (Liu et al. 2020): the free energy, high on outliers."""
  return -temperature * special.logsumexp(checks.check_logits(logits) / temperature, axis=1)


def odin(logits_fn: Callable, inputs, temperature: float = 1000.0, epsilon: float = 0.0014,
         batch_size: int = 1024) -> np.ndarray:
  """ODIN (Liang et al. 2018): 1 - max softmax(f(x~) / T), x~ = x - eps sign(-grad log max).

  logits_fn: a jax-traceable function (batch of inputs) -> logits.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  inputs = np.asarray(inputs, np.float32)
  if inputs.ndim < 2 or len(inputs) == 0:
    raise checks.AbstainInputError(f'inputs must be a non-empty batch, got {inputs.shape}.')
  if not np.all(np.isfinite(inputs)):
    raise checks.AbstainInputError('inputs must be finite (NaN or inf found).')
  if not temperature > 0 or not epsilon >= 0:
    raise checks.AbstainInputError(f'ODIN needs temperature > 0 and epsilon >= 0, got '
                                   f'{temperature}, {epsilon}.')

  def log_max(x):
    return jnp.sum(jnp.max(jax.nn.log_softmax(logits_fn(x) / temperature, -1), -1))

  @jax.jit
  def score(x):
    x_tilde = x + epsilon * jnp.sign(jax.grad(log_max)(x))
    return 1.0 - jnp.max(jax.nn.softmax(logits_fn(x_tilde) / temperature, -1), -1)

  return np.concatenate([np.asarray(score(inputs[i:i + batch_size]), np.float64)
                         for i in range(0, len(inputs), batch_size)])


@dataclasses.dataclass
class Mahalanobis:
  """Lee et al. 2018: min_k (f - mu_k)^T Sigma^-1 (f - mu_k), Sigma tied over classes."""
  means: np.ndarray      # (K, D)
  precision: np.ndarray  # (D, D)

  @classmethod
  def fit(cls, features, labels, ridge: float = 1e-6) -> 'Mahalanobis':
    f = np.asarray(features, np.float64)
    labels = np.asarray(labels)
    if f.ndim != 2 or labels.shape != (len(f),) or len(f) == 0:
      raise checks.AbstainInputError(f'features must be (N, D) with labels (N,), got {f.shape} '
                                     f'and {labels.shape}.')
    if not np.issubdtype(labels.dtype, np.integer):
      raise checks.AbstainInputError(f'labels must be integers, got {labels.dtype}.')
    if not np.all(np.isfinite(f)):
      raise checks.AbstainInputError('features must be finite (NaN or inf found).')
    classes = np.unique(labels)
    means = np.stack([f[labels == k].mean(0) for k in classes])
    centred = f - means[np.searchsorted(classes, labels)]
    cov = centred.T @ centred / len(f)
    cov += ridge * np.trace(cov) / len(cov) * np.eye(len(cov)) + 1e-12 * np.eye(len(cov))
    return cls(means=means, precision=np.linalg.inv(cov))

  def score(self, features) -> np.ndarray:
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or f.shape[1] != self.means.shape[1]:
      raise checks.AbstainInputError(f'features must be (N, {self.means.shape[1]}), got '
                                     f'{f.shape}.')
    # (f - mu)' P (f - mu) = f'Pf - 2 f'P mu + mu'P mu (P symmetric): matrix products, (N, K)
    # memory. (The (N, K, D) differences took 5.9 GB and ~5 min for CIFAR's 18,000 test
    # examples over 80 classes of 512 features.)
    fp = f @ self.precision
    quad = (np.einsum('nd,nd->n', fp, f)[:, None] - 2 * fp @ self.means.T
            + np.einsum('kd,kd->k', self.means @ self.precision, self.means)[None])
    return np.min(np.maximum(quad, 0.0), axis=1)


def outlier_exposure_loss(logits, labels, is_outlier, weight: float = 0.5):
  """Hendrycks et al. 2019 (jax): cross-entropy on inliers + weight x cross-entropy to the
  uniform distribution on auxiliary outliers; each term averaged over its own examples."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  log_p = jax.nn.log_softmax(logits, -1)
  out = is_outlier.astype(log_p.dtype)
  ce = -jnp.take_along_axis(log_p, labels[:, None].astype(jnp.int32), axis=1)[:, 0]
  uniform = -jnp.mean(log_p, axis=-1)
  n_in, n_out = jnp.maximum(jnp.sum(1 - out), 1.0), jnp.maximum(jnp.sum(out), 1.0)
  return jnp.sum((1 - out) * ce) / n_in + weight * jnp.sum(out * uniform) / n_out


@dataclasses.dataclass
class Sirc:
  """SIRC: confidence -log(1 - s1 + eps) - logaddexp(0, -b (s2 - a)); a, b from inliers' s2.

  s1 is the MSP (a confidence in [0, 1]); s2 a second confidence (higher = more inlier-like),
  e.g. minus an OOD score; a = mean - 3 std and b = 1 / std of s2 on inliers.
  """
  a: float
  b: float
  eps: float = 1e-6

  @classmethod
  def fit(cls, s2_inliers) -> 'Sirc':
    s2 = checks.check_scores(s2_inliers, 's2_inliers')
    std = float(np.std(s2)) or 1.0
    return cls(a=float(np.mean(s2) - 3 * std), b=1.0 / std)

  def score(self, max_prob, s2) -> np.ndarray:
    """The abstain score: minus SIRC's confidence."""
    s1 = checks.check_probability(max_prob, 'max_prob')
    s2 = checks.check_scores(s2, 's2', len(s1), 'max_prob')
    return np.log(1 - s1 + self.eps) + np.logaddexp(0, -self.b * (s2 - self.a))


def linear_double(s1, s2, angle: float) -> np.ndarray:
  """cos(a) s1 + sin(a) s2 of two abstain scores (standardise them first)."""
  s1 = checks.check_scores(s1, 's1')
  s2 = checks.check_scores(s2, 's2', len(s1), 's1')
  return np.cos(angle) * s1 + np.sin(angle) * s2


def tune_linear_double(s1, s2, is_outlier, correct, c_fn, budget,
                       angles=np.linspace(0, np.pi / 2, 31)) -> float:
  """The angle in [0, pi/2] with the lowest SCOD risk at `budget` on labelled validation data."""
  risks = [scod.scod_risk_at_budget(linear_double(s1, s2, a), is_outlier, correct, c_fn, budget)
           for a in angles]
  return float(np.asarray(angles)[int(np.argmin(risks))])

"""The plug-in estimators: mixture corrections, temperatures, score transforms (abstain.estimators)."""

import numpy as np
import pytest
from scipy import stats

from abstain import estimators


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

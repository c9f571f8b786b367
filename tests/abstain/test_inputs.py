"""Bad input: clear errors before compute; splits by class (abstain.checks, abstain.splits)."""

import numpy as np
import pytest

import abstain
from abstain import estimators
from abstain import metrics
from abstain import scod
from abstain import scores
from abstain import splits


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

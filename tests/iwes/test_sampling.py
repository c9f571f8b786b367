"""IWeS's sampling probabilities, weights and the pass over the pool: formulas against hand
computations, the unbiasedness of inverse-probability weights, and every bad input."""

import math

import numpy as np
import pytest

from common import validate
from iwes import checks
from iwes import sampling

F = np.array([[0.5, 0.25, 0.25], [0.9, 0.05, 0.05], [1 / 3, 1 / 3, 1 / 3]])
G = np.array([[0.25, 0.5, 0.25], [0.05, 0.9, 0.05], [1 / 3, 1 / 3, 1 / 3]])


def test_dis_probability_by_hand():
  p = sampling.dis_probability(F, G, np.array([0, 0, 2]), p_min=0.05)
  assert p[0] == pytest.approx(math.log(2) / math.log(3))             # |log .5 - log .25| / log 3
  assert p[1] == 1.0                                                    # log(18) / log 3 > 1: clip
  assert p[2] == 0.05                                                   # agreement: p_min
  # the label picks the class: on class 2 of the first row both say 0.25
  assert sampling.dis_probability(F, G, np.array([2, 0, 2]), p_min=0.2)[0] == 0.2


def test_label_free_probability_by_hand():
  p = sampling.free_probability(F, G, p_min=0.01)
  # 0.5 log 0.5 = 0.25 log 0.25: swapping those two classes is invisible without labels
  assert p[0] == 0.01
  f, g = np.array([[0.7, 0.2, 0.1]]), np.array([[0.2, 0.7, 0.1]])
  by_hand = 2 * abs(0.7 * math.log(0.7) - 0.2 * math.log(0.2)) / math.log(3)
  assert sampling.free_probability(f, g, p_min=0.01)[0] == pytest.approx(by_hand)
  row1 = 2 * abs(0.9 * math.log(0.9) - 0.05 * math.log(0.05)) / math.log(3)
  assert p[1] == pytest.approx(min(row1, 1.0))
  assert p[2] == 0.01


def test_entropy_probability_by_hand():
  probs = np.array([[1 / 3] * 3, [1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
  p = sampling.entropy_probability(probs, p_min=0.1)
  np.testing.assert_allclose(p, [1.0, 0.1, math.log(2) / math.log(3)])
  # kind='ent' reads f only
  np.testing.assert_allclose(sampling.probability('ent', probs, p_min=0.1), p)


def test_every_probability_lies_in_p_min_to_one():
  rng = np.random.default_rng(0)
  f, g = rng.dirichlet(np.ones(10) * 0.2, 500), rng.dirichlet(np.ones(10) * 0.2, 500)
  y = rng.integers(0, 10, 500)
  for kind in sampling.KINDS:
    p = sampling.probability(kind, f, g, y, p_min=0.07)
    assert p.shape == (500,) and p.min() >= 0.07 and p.max() <= 1.0


def test_importance_weights_cap_and_normalise():
  np.testing.assert_allclose(sampling.importance_weights([0.1, 0.5, 1.0], w_max=5), [5, 2, 1])
  np.testing.assert_allclose(sampling.importance_weights([0.1, 0.5, 1.0]), [10, 2, 1])
  w = sampling.importance_weights([0.1, 0.5, 1.0], w_max=5, normalise=True)
  np.testing.assert_allclose(w, np.array([5, 2, 1]) * 3 / 8)
  assert w.mean() == pytest.approx(1.0)


def test_pass_keeps_with_probability_p_until_the_batch_is_full():
  rng = np.random.default_rng(1)
  p = np.full(10_000, 0.2)
  available = np.ones(10_000, bool)
  available[:100] = False
  draw = sampling.sample_batch(p, 500, rng, available=available, w_max=3.0)
  assert len(draw.indices) == 500 and len(set(draw.indices.tolist())) == 500
  assert draw.indices.min() >= 100                       # only available examples
  assert draw.passes == 1
  assert draw.acceptance_rate == pytest.approx(500 / draw.examined)
  assert abs(draw.acceptance_rate - 0.2) < 0.03          # kept / examined estimates p
  np.testing.assert_allclose(draw.weights, 3.0)          # 1/0.2 = 5 capped at 3
  np.testing.assert_allclose(draw.p, 0.2)
  # p = 1: every example examined is kept
  full = sampling.sample_batch(np.ones(50), 20, rng)
  assert full.examined == 20 and full.acceptance_rate == 1.0
  # the no-weight ablation: the same draw, weights 1
  again = sampling.sample_batch(p, 500, np.random.default_rng(1), available=available,
                                weighted=False)
  np.testing.assert_array_equal(again.indices, draw.indices)
  np.testing.assert_allclose(again.weights, 1.0)


def test_a_short_pass_continues_over_what_is_left():
  p = np.full(100, 0.05)
  draw = sampling.sample_batch(p, 60, np.random.default_rng(2))
  assert len(set(draw.indices.tolist())) == 60 and draw.passes > 1
  # one pass only: the batch may stay short
  short = sampling.sample_batch(p, 60, np.random.default_rng(2), max_passes=1)
  assert len(short.indices) < 60 and short.examined == 100


def test_inverse_probability_weights_make_the_weighted_mean_unbiased():
  """One Bernoulli pass (every x kept with probability p(x)): sum_kept v / p / N estimates the
  pool mean without bias (Horvitz-Thompson), even when p is correlated with v; capping the
  weights biases it; the plain mean of what was kept is biased too."""
  rng = np.random.default_rng(3)
  n = 400
  v = rng.exponential(1.0, n)
  p = np.clip(0.6 * v / v.max() + 0.02, 0.02, 1.0)       # large values kept more often
  truth = v.mean()
  estimates, capped, plain = [], [], []
  for _ in range(3000):
    draw = sampling.sample_batch(p, n, rng, max_passes=1)
    estimates.append(np.sum(v[draw.indices] * draw.weights) / n)
    capped.append(np.sum(v[draw.indices] * np.minimum(draw.weights, 5.0)) / n)
    plain.append(v[draw.indices].mean())
  estimates = np.array(estimates)
  se = estimates.std() / np.sqrt(len(estimates))
  assert abs(estimates.mean() - truth) < 4 * se
  assert np.mean(capped) < truth - 10 * se               # the cap shrinks rare examples' weight
  assert np.mean(plain) > truth + 10 * se                # unweighted: biased to what p favours


@pytest.mark.parametrize('call, match', [
    (lambda: sampling.dis_probability(F, G, [0, 0, 2], p_min=0.0), 'p_min'),
    (lambda: sampling.dis_probability(F, G, [0, 0, 2], p_min=1.5), 'p_min'),
    (lambda: sampling.importance_weights([0.5], w_max=0.5), 'w_max'),
    (lambda: sampling.sample_batch(np.full(5, 0.5), 2, np.random.default_rng(0), w_max=0.9),
     'w_max'),
    (lambda: sampling.entropy_probability(F * 2, p_min=0.1), r'\[0, 1\]'),
    (lambda: sampling.entropy_probability(np.array([0, 2, 1]), p_min=0.1), 'class ids'),
    (lambda: sampling.free_probability(F, G[:2], p_min=0.1), 'same shape'),
    (lambda: sampling.dis_probability(F, G, [0, 3, 1], p_min=0.1), r'\[0, 3\)'),
    (lambda: sampling.dis_probability(F, G, [0.0, 1.0, 1.0], p_min=0.1), 'integer'),
    (lambda: sampling.entropy_probability(F[:, :2] / F[:, :2].sum(1, keepdims=True) * 1.5,
                                          p_min=0.1), r'\[0, 1\]|sum to one'),
    (lambda: sampling.sample_batch(np.array([0.5, 1.2]), 1, np.random.default_rng(0)),
     r'\[0, 1\]'),
    (lambda: sampling.sample_batch(np.full(5, 0.5), 6, np.random.default_rng(0)), 'larger'),
    (lambda: sampling.sample_batch(np.array([0.5, 0.0, 0.0]), 2, np.random.default_rng(0)),
     'never fill'),
    (lambda: sampling.sample_batch(np.full(5, 0.5), 2, np.random.default_rng(0),
                                   available=np.ones(4, bool)), 'mask'),
    (lambda: sampling.probability('bald', F, G, p_min=0.1), 'Unknown sampling kind'),
    (lambda: sampling.probability('dis', F, G, p_min=0.1), 'labels'),
])
def test_bad_input_stops_with_a_clear_error(call, match):
  with pytest.raises(checks.IwesInputError, match=match):
    call()
  assert issubclass(checks.IwesInputError, ValueError)


def test_effective_sample_size_is_the_set_size_for_equal_weights_and_shrinks_with_spread():
  assert sampling.effective_sample_size(np.full(50, 3.0)) == pytest.approx(50)
  assert sampling.effective_sample_size([1.0, 1.0, 1.0, 97.0]) == pytest.approx(
      100 ** 2 / (3 + 97 ** 2))
  with pytest.raises(checks.IwesInputError, match='positive sum'):
    sampling.effective_sample_size(np.zeros(3))


def test_the_loss_variance_factor_is_one_for_equal_weights_and_about_n_over_ess_otherwise():
  rng = np.random.default_rng(0)
  losses = rng.exponential(size=20_000)
  assert sampling.loss_variance_factor(np.ones(20_000), losses) == pytest.approx(1.0)
  weights = rng.choice([1.0, 20.0], size=20_000, p=[0.9, 0.1])   # independent of the losses
  n_over_ess = len(weights) / sampling.effective_sample_size(weights)
  assert sampling.loss_variance_factor(weights, losses) == pytest.approx(n_over_ess, rel=0.1)
  with pytest.raises(checks.IwesInputError, match='one per weight'):
    sampling.loss_variance_factor(np.ones(3), np.ones(4))


def test_probabilities_are_checked_by_the_common_row_check_with_iwes_hints():
  assert issubclass(checks.IwesInputError, validate.InputError)
  with pytest.raises(checks.IwesInputError, match='class ids'):
    checks.check_probs(np.array([0, 2, 1]))
  with pytest.raises(checks.IwesInputError, match='at least two classes'):
    checks.check_probs(np.ones((3, 1)))
  with pytest.raises(checks.IwesInputError, match=r'row 1 sums to 0\.5000'):
    checks.check_probs(np.array([[0.5, 0.5], [0.25, 0.25]]))
  np.testing.assert_array_equal(checks.check_probs([[0.5, 0.5]]), [[0.5, 0.5]])

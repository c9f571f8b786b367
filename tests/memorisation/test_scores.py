"""The estimator against brute force, its standard error, the masks, and bad input."""

import numpy as np
import pytest

from memorisation import scores


def _brute(masks, correct):
  """mem, cscore by loops over examples and models, as Feldman-Zhang define them."""
  k, n = masks.shape
  mem, cs = np.zeros(n), np.zeros(n)
  for i in range(n):
    ins = [correct[m, i] for m in range(k) if masks[m, i]]
    outs = [correct[m, i] for m in range(k) if not masks[m, i]]
    cs[i] = sum(outs) / max(len(outs), 1e-10)
    mem[i] = sum(ins) / max(len(ins), 1e-10) - cs[i]
  return mem, cs


def test_estimator_matches_a_brute_force_count_on_a_hand_made_matrix():
  masks = np.array([[1, 0, 1, 1],
                    [0, 1, 1, 0],
                    [1, 1, 0, 0],
                    [0, 0, 0, 1]], bool)
  correct = np.array([[1, 0, 1, 1],
                      [0, 1, 1, 0],
                      [1, 1, 0, 1],
                      [0, 1, 1, 0]])
  s = scores.memorisation(masks, correct)
  # Example 0: in models 0, 2 (both right) -> 1; out models 1, 3 (both wrong) -> 0: mem 1.
  # Example 1: in 1, 2 (right, right) -> 1; out 0, 3 (wrong, right) -> 0.5: mem 0.5.
  # Example 2: in 0, 1 (right, right) -> 1; out 2, 3 (wrong, right) -> 0.5.
  # Example 3: in 0, 3 (right, wrong) -> 0.5; out 1, 2 (wrong, right) -> 0.5: mem 0.
  np.testing.assert_allclose(s.mem, [1.0, 0.5, 0.5, 0.0])
  np.testing.assert_allclose(s.cscore, [0.0, 0.5, 0.5, 0.5])
  np.testing.assert_allclose(s.num_in, [2, 2, 2, 2])
  mem, cs = _brute(masks, correct)
  np.testing.assert_allclose(s.mem, mem)
  np.testing.assert_allclose(s.cscore, cs)
  # Binomial standard error of the difference: example 3: sqrt(.25/2 + .25/2).
  np.testing.assert_allclose(s.se[3], np.sqrt(0.25))
  np.testing.assert_allclose(s.se[0], 0.0)


def test_estimator_matches_brute_force_on_random_masks():
  rng = np.random.default_rng(1)
  masks = scores.subset_masks(40, 30, 0.7, seed=3)
  correct = rng.random((40, 30)) < 0.6
  s = scores.memorisation(masks, correct)
  mem, cs = _brute(masks, correct)
  np.testing.assert_allclose(s.mem, mem)
  np.testing.assert_allclose(s.cscore, cs)
  np.testing.assert_allclose(s.in_accuracy - s.cscore, s.mem)


def test_influence_matches_brute_force():
  rng = np.random.default_rng(2)
  masks = scores.subset_masks(30, 12, 0.7, seed=0)
  correct_test = rng.random((30, 5)) < 0.5
  infl = scores.influence(masks, correct_test)
  assert infl.shape == (12, 5)
  for i in range(12):
    for j in range(5):
      with_i = correct_test[masks[:, i], j].mean()
      without_i = correct_test[~masks[:, i], j].mean()
      assert infl[i, j] == pytest.approx(with_i - without_i)


def test_standard_error_covers_the_true_score():
  """Models right with p = 0.9 when they saw i and 0.4 when not: mem = 0.5 everywhere; about 95%
  of the 2-se intervals cover it."""
  rng = np.random.default_rng(0)
  masks = scores.subset_masks(64, 2000, 0.7, seed=1)
  correct = np.where(masks, rng.random(masks.shape) < 0.9, rng.random(masks.shape) < 0.4)
  s = scores.memorisation(masks, correct)
  covered = np.abs(s.mem - 0.5) <= 1.96 * s.se
  assert 0.91 < covered.mean() < 0.98
  assert abs(s.mem.mean() - 0.5) < 0.01
  assert abs(s.se.mean() - np.sqrt(0.09 / 44.8 + 0.24 / 19.2)) < 0.01


def test_masks_are_fixed_size_seeded_per_model_and_paired_across_runs():
  masks = scores.subset_masks(8, 100, 0.7, seed=5)
  assert masks.dtype == bool and np.all(masks.sum(1) == 70)
  np.testing.assert_array_equal(masks, scores.subset_masks(8, 100, 0.7, seed=5))
  np.testing.assert_array_equal(masks, scores.subset_masks(16, 100, 0.7, seed=5)[:8])
  assert not np.array_equal(masks, scores.subset_masks(8, 100, 0.7, seed=6))
  assert len({tuple(r) for r in masks}) == 8
  assert scores.subset_size(10, 0.75) == 7


def test_too_few_models_say_how_many_examples_are_missing():
  masks = np.ones((3, 5), bool)
  masks[:, 0] = False     # example 0 in no subset
  masks[0, 1] = False     # example 1 out of one; examples 2-4 in every subset
  with pytest.raises(scores.MemorisationInputError,
                     match=r'K = 3 subsets are too few: 1 of 5 examples are in no subset and 3 '
                           r'are in every subset'):
    scores.memorisation(masks, np.ones((3, 5)))
  with pytest.raises(scores.MemorisationInputError, match='too few'):
    scores.check_masks(scores.subset_masks(4, 2000, 0.7))


@pytest.mark.parametrize('fraction', [0.0, 1.0, 1.5, -0.2, float('nan'), True, '0.7'])
def test_fraction_outside_the_open_unit_interval_is_refused(fraction):
  with pytest.raises(scores.MemorisationInputError, match='between 0 and 1'):
    scores.subset_masks(8, 100, fraction)


def test_subsets_that_cannot_leave_an_example_out_are_refused():
  with pytest.raises(scores.MemorisationInputError, match='at least one'):
    scores.subset_masks(8, 3, 0.2)   # int(0.6) = 0 examples
  with pytest.raises(scores.MemorisationInputError, match='num_models'):
    scores.subset_masks(1, 100, 0.7)


def test_correctness_that_is_not_zero_one_is_refused():
  masks = scores.subset_masks(40, 20, 0.7)
  with pytest.raises(scores.MemorisationInputError, match=r'0/1 \(argmax == label\)'):
    scores.memorisation(masks, np.full((40, 20), 0.8))        # probabilities
  with pytest.raises(scores.MemorisationInputError, match='expected \\(40, 20\\)'):
    scores.memorisation(masks, np.ones((40, 21)))
  with pytest.raises(scores.MemorisationInputError, match='shape'):
    scores.memorisation(masks, np.ones(20))
  with pytest.raises(scores.MemorisationInputError, match='0/1'):
    scores.memorisation(np.full((40, 20), 0.5), np.ones((40, 20)))
  with pytest.raises(scores.MemorisationInputError, match='models'):
    scores.influence(masks, np.ones((39, 5)))


def test_labels_out_of_range_are_refused():
  with pytest.raises(scores.MemorisationInputError, match=r'\[0, 10\); got values from 0 to 10'):
    scores.check_labels(np.array([0, 3, 10]), 10)
  with pytest.raises(scores.MemorisationInputError, match='integer'):
    scores.check_labels(np.array([0.0, 1.0]), 10)
  scores.check_labels(np.array([0, 9]), 10)

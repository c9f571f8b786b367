"""The baselines: top-k scores by hand, k-center greedy against brute force, BADGE's seeding,
Cluster-Margin's round-robin, method configs, bad input."""

import itertools

import numpy as np
import pytest

from iwes import baselines
from iwes import checks
from iwes import methods

PROBS = np.array([[0.5, 0.4, 0.1], [0.9, 0.05, 0.05], [0.34, 0.33, 0.33], [0.6, 0.2, 0.2]])


def test_top_k_uncertainty_scores_by_hand():
  np.testing.assert_allclose(baselines.margin_score(PROBS), [0.1, 0.85, 0.01, 0.4])
  np.testing.assert_allclose(baselines.least_confidence_score(PROBS), [0.5, 0.1, 0.66, 0.4])
  available = np.array([True, True, True, True])
  assert baselines.top_k(baselines.margin_score(PROBS), 2, available, largest=False).tolist() == [2, 0]
  assert baselines.top_k(baselines.entropy_score(PROBS), 1, available).tolist() == [2]
  available[2] = False  # already selected
  assert baselines.top_k(baselines.margin_score(PROBS), 2, available, largest=False).tolist() == [0, 3]


def _radius(x, centres):
  d = np.linalg.norm(x[:, None] - x[None, list(centres)], axis=-1)
  return d.min(1).max()


def test_k_center_greedy_against_brute_force():
  rng = np.random.default_rng(0)
  for trial in range(5):
    x = rng.normal(size=(12, 2))
    selected = np.zeros(12, bool)
    selected[rng.choice(12, 2, replace=False)] = True
    for k in (1, 2, 3):
      chosen = baselines.k_center_greedy(x, selected, k)
      assert len(set(chosen.tolist())) == k and not selected[chosen].any()
      # farthest-first, step by step, by brute force over the candidates
      centres = list(np.flatnonzero(selected))
      for c in chosen:
        d = np.linalg.norm(x[:, None] - x[None, centres], axis=-1).min(1)
        d[centres] = -1
        assert c == int(np.argmax(d))
        centres.append(int(c))
      # the covering radius is within the 2-approximation of the best subset of size k
      best = min(_radius(x, list(np.flatnonzero(selected)) + list(s))
                 for s in itertools.combinations(np.flatnonzero(~selected), k))
      got = _radius(x, list(np.flatnonzero(selected)) + chosen.tolist())
      assert best - 1e-9 <= got <= 2 * best + 1e-9


def test_k_center_with_nothing_selected_starts_anywhere_and_spreads():
  x = np.array([[0.0, 0], [0.1, 0], [10, 0], [10.1, 0], [5, 5]])
  chosen = baselines.k_center_greedy(x, np.zeros(5, bool), 3)
  assert chosen[0] == 0 and chosen[1] in (2, 3) and chosen[2] == 4


def test_badge_seeds_by_norm_then_never_repeats_a_point():
  rng = np.random.default_rng(1)
  probs = rng.dirichlet(np.ones(3), 30)
  features = rng.normal(size=(30, 4))
  emb = baselines.gradient_embedding(probs, features)
  assert emb.shape == (30, 12)
  g = probs.copy()
  g[np.arange(30), probs.argmax(1)] -= 1
  np.testing.assert_allclose(emb[5], np.outer(g[5], features[5]).ravel(), rtol=1e-5)
  # duplicated points: once one copy is chosen the other has distance 0, probability 0
  emb2 = np.concatenate([emb, emb])
  available = np.ones(60, bool)
  chosen = baselines.badge(emb2, 30, available, rng)
  assert chosen[0] == np.argmax(np.linalg.norm(emb2, axis=1)) % 60
  assert len({int(c) % 30 for c in chosen}) == 30
  # the factored form picks the same points from the same random numbers
  available = rng.random(30) < 0.8
  a = baselines.badge(emb, 10, available, np.random.default_rng(5))
  b = baselines.badge_from_outputs(probs, features, 10, available, np.random.default_rng(5))
  np.testing.assert_array_equal(a, b)
  assert available[a].all()


def test_cluster_margin_visits_smallest_clusters_first_round_robin():
  margins = np.array([0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.9, 0.95])
  clusters = np.array([0, 0, 0, 1, 1, 2, 2, 2])
  available = np.ones(8, bool)
  # candidates: the 6 smallest margins (ratio 2, k 3); per cluster 3, 2, 1 candidates
  chosen = baselines.cluster_margin(margins, clusters, 3, available, np.random.default_rng(0),
                                    ratio=2.0)
  assert [int(clusters[c]) for c in chosen] == [2, 1, 0]
  assert chosen[0] == 5
  chosen = baselines.cluster_margin(margins, clusters, 5, available, np.random.default_rng(0),
                                    ratio=2.0)
  assert sorted(int(clusters[c]) for c in chosen) == [0, 0, 1, 1, 2]
  assert set(chosen.tolist()) <= {0, 1, 2, 3, 4, 5}


def test_hac_clusters_separate_clear_groups():
  rng = np.random.default_rng(2)
  x = np.concatenate([rng.normal(0, 0.1, (10, 2)), rng.normal(5, 0.1, (10, 2))])
  ids = baselines.hac_clusters(x, 2)
  assert len(set(ids[:10])) == 1 and len(set(ids[10:])) == 1 and ids[0] != ids[10]


def test_methods_from_config_and_their_checks():
  m = methods.Method.from_config('iwes_dis_w5', {'kind': 'iwes', 'sampling': 'dis', 'w_max': 5.0})
  assert m.uses_labels and m.w_max == 5.0
  assert not methods.Method.from_config('ent', {'kind': 'iwes', 'sampling': 'ent'}).uses_labels
  with pytest.raises(checks.IwesInputError, match='w_max'):
    methods.Method.from_config('x', {'kind': 'iwes', 'w_max': 0.5})
  with pytest.raises(checks.IwesInputError, match='p_min'):
    methods.Method.from_config('x', {'kind': 'iwes', 'p_min': 0.0})
  with pytest.raises(checks.IwesInputError, match='unknown kind'):
    methods.Method.from_config('x', {'kind': 'coreset'})
  with pytest.raises(checks.IwesInputError, match='unknown fields'):
    methods.Method.from_config('x', {'kind': 'iwes', 'wmax': 5.0})


@pytest.mark.parametrize('call, match', [
    (lambda: baselines.top_k(np.ones(4), 5, np.ones(4, bool)), 'larger'),
    (lambda: baselines.top_k(np.ones(4), 2, np.ones(4)), 'bool mask'),
    (lambda: baselines.margin_score(np.array([1, 0, 2])), 'class ids'),
    (lambda: baselines.k_center_greedy(np.ones((4, 2)), np.zeros(3, bool), 1), 'mask'),
    (lambda: baselines.k_center_greedy(np.ones(4), np.zeros(4, bool), 1), 'dimensions'),
    (lambda: baselines.gradient_embedding(PROBS, np.ones((3, 2))), 'rows'),
    (lambda: baselines.cluster_margin(np.ones(4), np.ones(3, int), 1, np.ones(4, bool),
                                      np.random.default_rng(0)), 'clusters'),
    (lambda: baselines.cluster_margin(np.ones(4), np.ones(4, int), 1, np.ones(4, bool),
                                      np.random.default_rng(0), ratio=0.5), 'ratio'),
])
def test_bad_input_stops_with_a_clear_error(call, match):
  with pytest.raises(checks.IwesInputError, match=match):
    call()

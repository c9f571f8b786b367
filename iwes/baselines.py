"""The baselines IWeS is compared with: uniform, top-k uncertainty, k-center, BADGE, Cluster-Margin.

Each takes the available (unselected) pool as a bool mask and returns k pool indices, in the
order chosen. Scores come from the round's model f (probabilities (N, C), penultimate features
(N, D)):

    idx = baselines.top_k(baselines.margin_score(probs), k, available)       # smallest margins
    idx = baselines.k_center_greedy(features, selected, k, available)
    idx = baselines.badge(baselines.gradient_embedding(probs, features), k, available, rng)
    idx = baselines.badge_from_outputs(probs, features, k, available, rng)   # the same, faster
    clusters = baselines.hac_clusters(features, num_clusters)                # once, then per round
    idx = baselines.cluster_margin(margin_score(probs), clusters, k, available, rng, ratio=10)
"""

from __future__ import annotations

import numpy as np

from iwes import checks


def _available(available, n: int, k: int) -> np.ndarray:
  available = np.asarray(available)
  if available.dtype != bool or available.shape != (n,):
    raise checks.IwesInputError(f'available must be a bool mask of shape ({n},), got '
                                f'{available.dtype} {available.shape}.')
  k = checks.check_count(k, 'k')
  if available.sum() < k:
    raise checks.IwesInputError(f'k={k} is larger than the available pool '
                                f'({int(available.sum())} examples).')
  return available


def _features(features, name: str = 'features', n: int | None = None) -> np.ndarray:
  arr = np.asarray(features)
  if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
    raise checks.IwesInputError(f'{name} must be a numeric (examples, dimensions) array, got '
                                f'{arr.dtype} {arr.shape}.')
  if n is not None and arr.shape[0] != n:
    raise checks.IwesInputError(f'{name} has {arr.shape[0]} rows, expected {n}.')
  if not np.all(np.isfinite(arr)):
    raise checks.IwesInputError(f'{name} must be finite.')
  return arr.astype(np.float32)


# --- Uncertainty scores: larger = more uncertain, except the margin (smaller = more uncertain).
def margin_score(probs) -> np.ndarray:
  """Top-1 minus top-2 probability (select the smallest)."""
  probs = checks.check_probs(probs)
  top2 = np.sort(probs, axis=1)[:, -2:]
  return top2[:, 1] - top2[:, 0]


def entropy_score(probs) -> np.ndarray:
  probs = checks.check_probs(probs)
  return -np.sum(probs * np.log(np.maximum(probs, 1e-12)), axis=1)


def least_confidence_score(probs) -> np.ndarray:
  probs = checks.check_probs(probs)
  return 1.0 - probs.max(1)


def top_k(scores, k: int, available, largest: bool = True) -> np.ndarray:
  """The k available indices with the largest (or smallest) scores, best first (stable ties)."""
  scores = np.asarray(scores, np.float64)
  if scores.ndim != 1:
    raise checks.IwesInputError(f'scores must be 1-D, got shape {scores.shape}.')
  available = _available(available, len(scores), k)
  idx = np.flatnonzero(available)
  key = -scores[idx] if largest else scores[idx]
  return idx[np.argsort(key, kind='stable')[:k]]


def uniform(k: int, available, rng: np.random.Generator) -> np.ndarray:
  available = np.asarray(available)
  available = _available(available, len(available), k)
  return rng.choice(np.flatnonzero(available), size=k, replace=False)


# --- k-center greedy (the coreset baseline).
def k_center_greedy(features, selected, k: int, available=None,
                    rng: np.random.Generator | None = None) -> np.ndarray:
  """Farthest-first traversal: k times, the available point farthest (Euclidean) from its
  nearest selected point (the already-selected set, then what this call has chosen). With
  nothing selected yet the first point is random (rng) or index 0."""
  x = _features(features)
  n = len(x)
  selected = np.asarray(selected)
  if selected.dtype != bool or selected.shape != (n,):
    raise checks.IwesInputError(f'selected must be a bool mask of shape ({n},).')
  available = ~selected if available is None else np.asarray(available)
  available = _available(available, n, k)
  sq = np.sum(x * x, 1)
  min_d2 = np.full(n, np.inf)

  def update(centres):
    nonlocal min_d2
    for lo in range(0, len(centres), 256):
      c = x[centres[lo:lo + 256]]
      d2 = sq[:, None] - 2 * x @ c.T + np.sum(c * c, 1)[None, :]
      min_d2 = np.minimum(min_d2, np.maximum(d2, 0).min(1))

  chosen = []
  if selected.any():
    update(np.flatnonzero(selected))
  else:
    first = int(rng.choice(np.flatnonzero(available))) if rng is not None else int(
        np.flatnonzero(available)[0])
    chosen.append(first)
    update(np.array([first]))
  while len(chosen) < k:
    d = np.where(available, min_d2, -1.0)
    d[chosen] = -1.0
    nxt = int(np.argmax(d))
    chosen.append(nxt)
    update(np.array([nxt]))
  return np.asarray(chosen, np.int64)


# --- BADGE.
def gradient_embedding(probs, features) -> np.ndarray:
  """(N, C * D): the last layer's cross-entropy gradient at the predicted label,
  (p - onehot(argmax p)) outer features (BADGE's hallucinated-label embedding)."""
  probs = checks.check_probs(probs)
  x = _features(features, n=len(probs))
  g = probs.astype(np.float32)
  g[np.arange(len(g)), probs.argmax(1)] -= 1.0
  return (g[:, :, None] * x[:, None, :]).reshape(len(x), -1)


def badge(embeddings, k: int, available, rng: np.random.Generator) -> np.ndarray:
  """k-means++ seeding on the gradient embeddings of the available pool: the first point of
  largest norm, then each next with probability proportional to its squared distance to the
  nearest chosen one."""
  x = _features(embeddings, 'embeddings')
  available = _available(available, len(x), k)
  idx = np.flatnonzero(available)
  pts = x[idx]
  gram_row = lambda i: pts @ pts[i]
  return idx[_kmeanspp(np.sum(pts * pts, 1), gram_row, k, rng)]


def badge_from_outputs(probs, features, k: int, available, rng: np.random.Generator):
  """badge(gradient_embedding(probs, features), ...) without forming the (N, C * D) embeddings:
  <a_i (x) x_i, a_j (x) x_j> = <a_i, a_j> <x_i, x_j>, so each step reads (N, C) and (N, D)."""
  probs = checks.check_probs(probs)
  x = _features(features, n=len(probs))
  available = _available(available, len(x), k)
  a = probs.astype(np.float32)
  a[np.arange(len(a)), probs.argmax(1)] -= 1.0
  idx = np.flatnonzero(available)
  a, x = a[idx], x[idx]
  sq = np.sum(a * a, 1) * np.sum(x * x, 1)
  gram_row = lambda i: (a @ a[i]) * (x @ x[i])
  return idx[_kmeanspp(sq, gram_row, k, rng)]


def _kmeanspp(sq: np.ndarray, gram_row, k: int, rng: np.random.Generator) -> np.ndarray:
  """k-means++ seeding from squared norms (n,) and rows of the Gram matrix."""
  chosen = [int(np.argmax(sq))]
  min_d2 = np.maximum(sq - 2 * gram_row(chosen[0]) + sq[chosen[0]], 0)
  min_d2[chosen[0]] = 0.0
  while len(chosen) < k:
    total = float(min_d2.sum())
    if total <= 0:  # every remaining point coincides with a chosen one: pick at random
      nxt = int(rng.choice(np.setdiff1d(np.arange(len(sq)), chosen)))
    else:
      nxt = int(rng.choice(len(sq), p=min_d2 / total))
    chosen.append(nxt)
    min_d2 = np.minimum(min_d2, np.maximum(sq - 2 * gram_row(nxt) + sq[nxt], 0))
    min_d2[nxt] = 0.0
  return np.asarray(chosen, np.int64)


# --- Cluster-Margin.
def hac_clusters(features, num_clusters: int, max_points: int = 2000,
                 rng: np.random.Generator | None = None) -> np.ndarray:
  """(N,) cluster ids from average-linkage agglomerative clustering (Euclidean), cut into at
  most `num_clusters` clusters. Cluster-Margin clusters the pool once, with the first model.
  Average linkage costs O(N^2) memory and time, so past `max_points` a random sample of that
  many is clustered and every other point joins the cluster of its nearest sampled point."""
  from scipy.cluster import hierarchy  # pylint: disable=g-import-not-at-top
  x = _features(features)
  num_clusters = checks.check_count(num_clusters, 'num_clusters')
  max_points = checks.check_count(max_points, 'max_points', minimum=2)
  if len(x) < 2:
    return np.zeros(len(x), np.int64)
  sample = np.arange(len(x))
  if len(x) > max_points:
    sample = np.sort((rng or np.random.default_rng(0)).choice(len(x), max_points, replace=False))
  tree = hierarchy.linkage(x[sample].astype(np.float64), method='average', metric='euclidean')
  ids = hierarchy.fcluster(tree, t=num_clusters, criterion='maxclust').astype(np.int64) - 1
  if len(sample) == len(x):
    return ids
  out = np.empty(len(x), np.int64)
  ref = x[sample]
  ref_sq = np.sum(ref * ref, 1)
  for lo in range(0, len(x), 1024):
    block = x[lo:lo + 1024]
    d2 = ref_sq[None, :] - 2 * block @ ref.T
    out[lo:lo + 1024] = ids[np.argmin(d2, 1)]
  return out


def cluster_margin(margins, clusters, k: int, available, rng: np.random.Generator,
                   ratio: float = 10.0) -> np.ndarray:
  """The ratio * k available examples of smallest margin, grouped by cluster; clusters visited
  smallest first, round-robin, one random member each visit, until k are chosen."""
  margins = np.asarray(margins, np.float64)
  clusters = np.asarray(clusters)
  if clusters.shape != margins.shape or not np.issubdtype(clusters.dtype, np.integer):
    raise checks.IwesInputError(f'clusters must be integer ids of shape {margins.shape}, got '
                                f'{clusters.dtype} {clusters.shape}.')
  if not ratio >= 1:
    raise checks.IwesInputError(f'ratio={ratio!r}: expected >= 1 (candidates per selected).')
  available = _available(available, len(margins), k)
  n_cand = min(int(round(ratio * k)), int(available.sum()))
  cand = top_k(margins, n_cand, available, largest=False)
  groups = {}
  for i in cand:
    groups.setdefault(int(clusters[i]), []).append(int(i))
  members = [rng.permutation(v).tolist() for _, v in sorted(groups.items(),
                                                            key=lambda kv: (len(kv[1]), kv[0]))]
  chosen = []
  while len(chosen) < k:
    for group in members:
      if group and len(chosen) < k:
        chosen.append(group.pop())
  return np.asarray(chosen, np.int64)

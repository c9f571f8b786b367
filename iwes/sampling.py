"""IWeS's sampling probabilities, the importance weights, and the pass over the pool.

    p = sampling.probability('dis', probs_f, probs_g, labels, p_min=0.05)   # (N,) in [p_min, 1]
    draw = sampling.sample_batch(p, batch_size=300, rng=rng, available=~selected, w_max=5.0)
    draw.indices, draw.weights, draw.acceptance_rate

The probabilities (all divided by log C, so that they lie in [0, 1] before clipping):
  dis   |log P_f(y|x) - log P_g(y|x)|         the label-using disagreement (closest to IWeS-V's
                                                loss difference, the variant the theory covers)
  free  sum_c |f_c log f_c - g_c log g_c|      the label-free disagreement
  ent   H(P_f(.|x))                            IWeS-ent, for active learning (one model)
each clipped to [p_min, 1]. An example kept with probability p gets the weight min(1/p, w_max)
(optionally rescaled to mean 1 within its batch; all ones for the no-weight ablation).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from iwes import checks

KINDS = ('dis', 'free', 'ent')
_TINY = 1e-12


def entropy(probs) -> np.ndarray:
  """(N,) Shannon entropy in nats of each row of (N, C) probabilities (0 log 0 = 0)."""
  probs = checks.check_probs(probs)
  return -np.sum(probs * np.log(np.maximum(probs, _TINY)), axis=1)


def dis_probability(probs_f, probs_g, labels, p_min: float) -> np.ndarray:
  """clip(|log P_f(y|x) - log P_g(y|x)| / log C, p_min, 1): IWeS-dis with the labels known."""
  p_min = checks.check_p_min(p_min)
  f, g = checks.check_pair(probs_f, probs_g)
  y = checks.check_labels(labels, f.shape[0], f.shape[1])
  rows = np.arange(len(y))
  gap = np.abs(np.log(np.maximum(f[rows, y], _TINY)) - np.log(np.maximum(g[rows, y], _TINY)))
  return np.clip(gap / np.log(f.shape[1]), p_min, 1.0)


def free_probability(probs_f, probs_g, p_min: float) -> np.ndarray:
  """clip(sum_c |f_c log f_c - g_c log g_c| / log C, p_min, 1): disagreement without labels."""
  p_min = checks.check_p_min(p_min)
  f, g = checks.check_pair(probs_f, probs_g)
  flogf = f * np.log(np.maximum(f, _TINY))
  glogg = g * np.log(np.maximum(g, _TINY))
  return np.clip(np.sum(np.abs(flogf - glogg), 1) / np.log(f.shape[1]), p_min, 1.0)


def entropy_probability(probs_f, p_min: float) -> np.ndarray:
  """clip(H(P_f(.|x)) / log C, p_min, 1): IWeS-ent (active learning: no labels, one model)."""
  p_min = checks.check_p_min(p_min)
  f = checks.check_probs(probs_f, 'probs_f')
  return np.clip(entropy(f) / np.log(f.shape[1]), p_min, 1.0)


def probability(kind: str, probs_f, probs_g=None, labels=None, *, p_min: float) -> np.ndarray:
  """The sampling probability of `kind` ('dis', 'free' or 'ent'); see the module docstring."""
  if kind == 'dis':
    if probs_g is None or labels is None:
      raise checks.IwesInputError("kind='dis' needs probs_g and labels.")
    return dis_probability(probs_f, probs_g, labels, p_min)
  if kind == 'free':
    if probs_g is None:
      raise checks.IwesInputError("kind='free' needs probs_g.")
    return free_probability(probs_f, probs_g, p_min)
  if kind == 'ent':
    return entropy_probability(probs_f, p_min)
  raise checks.IwesInputError(f'Unknown sampling kind {kind!r}; use one of {KINDS}.')


def importance_weights(p, w_max: float = np.inf, normalise: bool = False) -> np.ndarray:
  """min(1/p, w_max) for kept examples' probabilities p (> 0); normalise: rescaled to mean 1."""
  w_max = checks.check_w_max(w_max)
  p = checks.check_sampling_probability(p)
  if p.size and p.min() <= 0:
    raise checks.IwesInputError('A kept example cannot have probability 0 (its weight 1/p is '
                                'infinite).')
  weights = np.minimum(1.0 / p, w_max)
  if normalise and weights.size:
    weights = weights * (len(weights) / weights.sum())
  return weights


def effective_sample_size(weights) -> float:
  """(sum w)^2 / sum w^2: how many equally weighted examples a weighted set is worth (its size
  when the weights are equal, 1 when one weight dominates)."""
  w = np.asarray(weights, np.float64)
  if w.ndim != 1 or not w.size or not np.all(np.isfinite(w)) or w.min() < 0 or w.sum() <= 0:
    raise checks.IwesInputError(f'weights must be a non-empty 1-D array of finite non-negative '
                                f'numbers with a positive sum, got shape {w.shape}.')
  return float(w.sum() ** 2 / np.sum(w ** 2))


def loss_variance_factor(weights, losses) -> float:
  """The variance of the weighted mean loss sum_i w_i l_i / sum_i w_i over that of the plain mean,
  both estimated from the same n examples (the ratio estimator's delta-method variance
  sum_i w_i^2 (l_i - L_w)^2 / (sum_i w_i)^2 against sum_i (l_i - L)^2 / n^2): 1 for equal
  weights, about n / ESS when the weights do not follow the losses. What the weights add to
  the noise of the loss the models minimise."""
  w = np.asarray(weights, np.float64)
  l = np.asarray(losses, np.float64)
  effective_sample_size(w)
  if l.shape != w.shape or not np.all(np.isfinite(l)):
    raise checks.IwesInputError(f'losses must be finite, one per weight: shape {l.shape} for '
                                f'weights of shape {w.shape}.')
  plain = np.sum((l - l.mean()) ** 2) / len(l) ** 2
  if plain <= 0:
    return 1.0
  mean_w = np.sum(w * l) / w.sum()
  return float(np.sum(w ** 2 * (l - mean_w) ** 2) / w.sum() ** 2 / plain)


@dataclasses.dataclass
class Draw:
  """One round's batch: pool indices in the order they were kept, their p and weights."""
  indices: np.ndarray      # (k,) int
  p: np.ndarray            # (k,)
  weights: np.ndarray      # (k,)
  examined: int            # examples looked at (the passes' prefixes)
  passes: int              # passes over the still-unselected pool (1 unless the pool ran dry)

  @property
  def acceptance_rate(self) -> float:
    """Kept / examined: the sampling rate the paper's theory bounds."""
    return len(self.indices) / max(self.examined, 1)


def sample_batch(p, batch_size: int, rng: np.random.Generator, *, available=None,
                 w_max: float = np.inf, normalise: bool = False, weighted: bool = True,
                 max_passes: int | None = None) -> Draw:
  """Passes over the available pool in random order keeping x with probability p(x), until
  `batch_size` are kept; a pass that ends short starts another over what is left (in a fresh
  order). `max_passes` stops earlier (a batch may then be short: the unbiasedness of one pass).
  Weights min(1/p, w_max), rescaled to mean 1 if `normalise`, all ones if not `weighted`.
  """
  p = checks.check_sampling_probability(p)
  batch_size = checks.check_count(batch_size, 'batch_size')
  w_max = checks.check_w_max(w_max)
  if available is None:
    available = np.ones(len(p), bool)
  available = np.asarray(available)
  if available.dtype != bool or available.shape != p.shape:
    raise checks.IwesInputError(f'available must be a bool mask of shape {p.shape}, got '
                                f'{available.dtype} {available.shape}.')
  if int(available.sum()) < batch_size:
    raise checks.IwesInputError(f'batch_size={batch_size} is larger than the available pool '
                                f'({int(available.sum())} examples).')
  left = np.flatnonzero(available)
  if max_passes is None and np.count_nonzero(p[left] > 0) < batch_size:
    raise checks.IwesInputError(f'Only {np.count_nonzero(p[left] > 0)} available examples have '
                                f'p > 0; a batch of {batch_size} can never fill.')
  kept, examined, passes = [], 0, 0
  while len(kept) < batch_size and (max_passes is None or passes < max_passes):
    order = left[rng.permutation(len(left))]
    accept = rng.random(len(order)) < p[order]
    hits = np.flatnonzero(accept)
    need = batch_size - len(kept)
    if len(hits) >= need:
      examined += int(hits[need - 1]) + 1
      kept.extend(order[hits[:need]].tolist())
    else:
      examined += len(order)
      kept.extend(order[hits].tolist())
    passes += 1
    left = np.setdiff1d(left, order[hits], assume_unique=True)
  indices = np.asarray(kept, np.int64)
  p_kept = p[indices]
  weights = (importance_weights(p_kept, w_max, normalise) if weighted
             else np.ones(len(indices)))
  return Draw(indices=indices, p=p_kept, weights=weights, examined=examined, passes=passes)

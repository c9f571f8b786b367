"""Memorisation trajectories across model sizes: classes, their fractions, bootstrap intervals.

    tol = trajectories.tolerance(se_by_size, z=1.0, floor=0.05)        # (N,)
    classes = trajectories.classify(mem_by_size, tol)                    # (N,) class ids
    frac, lo, hi = trajectories.bootstrap_fractions(classes, rng=0)      # per class

A trajectory is an example's memorisation at sizes s_1 < ... < s_S. With first = mem(s_1),
last = mem(s_S), peak = max_s mem(s) and tolerance t (per example):
  cap-shaped  peak - first > t and peak - last > t     (up, then down)
  increasing  last - first > t (and not cap-shaped)
  decreasing  first - last > t (and not cap-shaped)
  flat        max - min <= t
  other       none of these (a dip, then back: U-shaped)
The tolerance is tied to the estimator's noise: t_i = max(floor, z sqrt(2) rms_s se_i(s)), the
standard error of a difference of two sizes' scores (taken as independent: conservative, since
the masks are shared across sizes).
"""

from __future__ import annotations

import numpy as np

from memorisation import scores as scores_lib

CLASSES = ('decreasing', 'cap', 'increasing', 'flat', 'other')
DECREASING, CAP, INCREASING, FLAT, OTHER = range(len(CLASSES))


def _check_curves(curves, name='mem_by_size') -> np.ndarray:
  curves = np.asarray(curves, np.float64)
  if curves.ndim != 2 or curves.shape[0] < 2:
    raise scores_lib.MemorisationInputError(
        f'{name} must be (num_sizes >= 2, num_examples), got shape {curves.shape}.')
  if not np.all(np.isfinite(curves)):
    raise scores_lib.MemorisationInputError(f'{name} holds NaN or inf.')
  return curves


def tolerance(se_by_size, z: float = 1.0, floor: float = 0.0) -> np.ndarray:
  """(N,) per-example tolerance max(floor, z sqrt(2) rms over sizes of se)."""
  se = _check_curves(se_by_size, 'se_by_size')
  if z < 0 or floor < 0:
    raise scores_lib.MemorisationInputError(f'z and floor must be >= 0, got {z}, {floor}.')
  return np.maximum(floor, z * np.sqrt(2.0 * np.mean(se**2, axis=0)))


def classify(curves, tol) -> np.ndarray:
  """(N,) class ids (indices into CLASSES) of trajectories curves (S, N) at tolerance tol."""
  curves = _check_curves(curves)
  tol = np.broadcast_to(np.asarray(tol, np.float64), curves.shape[1:])
  first, last = curves[0], curves[-1]
  peak, low = curves.max(0), curves.min(0)
  out = np.full(curves.shape[1], OTHER, np.int32)
  flat = peak - low <= tol
  cap = (peak - first > tol) & (peak - last > tol)
  inc = ~cap & (last - first > tol)
  dec = ~cap & (first - last > tol)
  out[flat] = FLAT
  out[dec] = DECREASING
  out[inc] = INCREASING
  out[cap] = CAP
  return out


def fractions(classes, num_classes: int = len(CLASSES)) -> np.ndarray:
  classes = np.asarray(classes)
  if classes.size == 0:
    raise scores_lib.MemorisationInputError('No trajectories to count.')
  return np.bincount(classes, minlength=num_classes)[:num_classes] / classes.size


def bootstrap_fractions(classes, num_resamples: int = 1000, level: float = 0.95, rng=0,
                        num_classes: int = len(CLASSES)):
  """(fraction, lower, upper) per class: percentile intervals over examples drawn with
  replacement."""
  classes = np.asarray(classes)
  rng = np.random.default_rng(rng)
  point = fractions(classes, num_classes)
  draws = rng.integers(0, classes.size, size=(num_resamples, classes.size))
  boot = np.stack([fractions(classes[d], num_classes) for d in draws])
  alpha = (1 - level) / 2
  return point, np.quantile(boot, alpha, axis=0), np.quantile(boot, 1 - alpha, axis=0)


def bootstrap_over_models(masks, correct_by_size, num_resamples: int = 200, level: float = 0.95,
                          rng=0, z: float = 1.0, floor: float = 0.0):
  """(fraction, lower, upper) per class with the estimator's noise included: each resample draws
  the K models with replacement (the same draw at every size: trajectories stay paired) and the
  examples with replacement, then recomputes scores, tolerances and classes.

  correct_by_size: (S, K, N) 0/1. Resamples in which some example is never in or never out are
  drawn again.
  """
  masks = scores_lib.check_masks(masks)
  correct_by_size = np.asarray(correct_by_size)
  if correct_by_size.ndim != 3 or correct_by_size.shape[1:] != masks.shape:
    raise scores_lib.MemorisationInputError(
        f'correct_by_size must be (num_sizes, {masks.shape[0]}, {masks.shape[1]}), got '
        f'{correct_by_size.shape}.')
  correct = np.stack([scores_lib.check_correctness(c) for c in correct_by_size])
  rng = np.random.default_rng(rng)
  num_models, n = masks.shape
  point = fractions(classify(*_scores(masks, correct, z, floor)))
  boot = []
  while len(boot) < num_resamples:
    ks = rng.integers(0, num_models, num_models)
    m = masks[ks]
    if not (m.any(0).all() and (~m).any(0).all()):
      continue
    cls = classify(*_scores(m, correct[:, ks], z, floor))
    boot.append(fractions(cls[rng.integers(0, n, n)]))
  boot = np.stack(boot)
  alpha = (1 - level) / 2
  return point, np.quantile(boot, alpha, axis=0), np.quantile(boot, 1 - alpha, axis=0)


def split_half(masks, correct_by_size, z: float = 1.0, floor: float = 0.0, rng=0):
  """How reproducible are the classes? The models split at random into two halves, each
  classifies every trajectory on its own: the fraction of examples in the same class, and per
  class the fraction of one half's members that the other half puts there too (a class made by
  estimator noise alone scores about its overall fraction)."""
  masks = scores_lib.check_masks(masks)
  correct = np.asarray(correct_by_size)
  order = np.random.default_rng(rng).permutation(masks.shape[0])
  halves = order[:len(order) // 2], order[len(order) // 2:]
  # Examples that both halves can score (each half has models with and without them).
  keep = np.ones(masks.shape[1], bool)
  for h in halves:
    keep &= masks[h].any(0) & (~masks[h]).any(0)
  cls = []
  for h in halves:
    c = np.stack([scores_lib.check_correctness(x[h][:, keep]) for x in correct])
    cls.append(classify(*_scores(masks[h][:, keep], c, z, floor)))
  a, b = cls
  given = {}
  for i, name in enumerate(CLASSES):
    both = np.sum((a == i) & (b == i))
    total = np.sum(a == i) + np.sum(b == i)
    given[name] = float(2 * both / total) if total else float('nan')
  return {'agreement': float(np.mean(a == b)), 'same_class_given_class': given,
          'examples': int(keep.sum()),
          'fraction_half_a': dict(zip(CLASSES, fractions(a).tolist())),
          'fraction_half_b': dict(zip(CLASSES, fractions(b).tolist()))}


def _scores(masks, correct, z, floor):
  mems, ses = [], []
  for c in correct:
    a, b, n_in, n_out = scores_lib._in_out(masks, c)  # pylint: disable=protected-access
    mems.append(a - b)
    ses.append(scores_lib.standard_error(a, b, n_in, n_out))
  return np.stack(mems), tolerance(np.stack(ses), z, floor)

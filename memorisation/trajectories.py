"""Memorisation trajectories across model sizes: classes, their fractions, bootstrap intervals.

    tol = trajectories.tolerance(se_by_size, z=1.0, floor=0.05)        # (N,)
    classes = trajectories.classify(mem_by_size, tol)                    # (N,) class ids
    frac, lo, hi = trajectories.bootstrap_fractions(classes, rng=0)      # per class
    null = trajectories.null_fractions(masks, correct_by_size, 200)      # (draws, classes)

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

What noise alone gives: at K = 64 the estimator's noise puts a few percent of examples whose true
memorisation is zero into each non-flat class. `null_fractions` measures it on the run's own
correctness with each example's mask column permuted across the models (the same permutation at
every size, so trajectories stay paired): in/out no longer matters, every true score is 0, and the
class fractions that remain are the noise floor a class must clear.
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


def model_draws(masks, num_resamples: int, rng=0) -> list[tuple[np.ndarray, np.ndarray]]:
  """Resamples of models and examples: [(ks (K,), idx (N,))], the K models drawn with
  replacement (again when some example would be in none or in all of them) and the N examples
  with replacement. One list serves every quantity of a run, so its intervals are paired."""
  masks = scores_lib.check_masks(masks)
  rng = np.random.default_rng(rng)
  num_models, n = masks.shape
  out = []
  while len(out) < num_resamples:
    ks = rng.integers(0, num_models, num_models)
    m = masks[ks]
    if not (m.any(0).all() and (~m).any(0).all()):
      continue
    out.append((ks, rng.integers(0, n, n)))
  return out


def recentred_interval(point: float, draws, level: float = 0.95) -> tuple[float, float]:
  """The bootstrap's percentile interval moved so that its draws' mean sits on the point estimate.

  Resampling the models with replacement duplicates some of them, which adds estimator noise and
  so inflates every non-flat class (digits' decreasing class: 0.096 at K = 64, draws around
  0.16). The spread of the draws is kept; their bias is removed.
  """
  draws = np.asarray(draws, np.float64)
  alpha = (1 - level) / 2
  shift = float(point) - float(draws.mean())
  return (float(np.quantile(draws, alpha)) + shift, float(np.quantile(draws, 1 - alpha)) + shift)


def classes_in_draws(masks, correct_by_size, draws, z: float = 1.0, floor: float = 0.0):
  """(num_draws, N) the class of every example under each draw's models (columns in example
  order: index them with the draw's idx)."""
  masks = scores_lib.check_masks(masks)
  correct = _check_correct_by_size(masks, correct_by_size)
  return np.stack([classify(*_scores(masks[ks], correct[:, ks], z, floor)) for ks, _ in draws])


def _check_correct_by_size(masks, correct_by_size) -> np.ndarray:
  correct_by_size = np.asarray(correct_by_size)
  if correct_by_size.ndim != 3 or correct_by_size.shape[1:] != masks.shape:
    raise scores_lib.MemorisationInputError(
        f'correct_by_size must be (num_sizes, {masks.shape[0]}, {masks.shape[1]}), got '
        f'{correct_by_size.shape}.')
  return np.stack([scores_lib.check_correctness(c) for c in correct_by_size])


def bootstrap_over_models(masks, correct_by_size, num_resamples: int = 200, level: float = 0.95,
                          rng=0, z: float = 1.0, floor: float = 0.0):
  """(fraction, lower, upper) per class with the estimator's noise included: each resample draws
  the K models with replacement (the same draw at every size: trajectories stay paired) and the
  examples with replacement, then recomputes scores, tolerances and classes; the interval is
  `recentred_interval` (duplicated models bias the raw draws upwards for non-flat classes).

  correct_by_size: (S, K, N) 0/1.
  """
  masks = scores_lib.check_masks(masks)
  correct = _check_correct_by_size(masks, correct_by_size)
  point = fractions(classify(*_scores(masks, correct, z, floor)))
  draws = model_draws(masks, num_resamples, rng)
  cls = classes_in_draws(masks, correct, draws, z, floor)
  boot = np.stack([fractions(c[idx]) for c, (_, idx) in zip(cls, draws)])
  bounds = [recentred_interval(p, b, level) for p, b in zip(point, boot.T)]
  return point, np.array([b[0] for b in bounds]), np.array([b[1] for b in bounds])


def permuted_masks(masks, rng) -> np.ndarray:
  """Each example's column of masks shuffled across the models (in/out counts kept)."""
  masks = np.asarray(masks, bool)
  order = np.argsort(rng.random(masks.shape), axis=0)
  return np.take_along_axis(masks, order, axis=0)


def null_fractions(masks, correct_by_size, num_draws: int = 200, z: float = 1.0,
                   floor: float = 0.0, rng=0, groups=None) -> np.ndarray:
  """(num_draws, len(CLASSES)) class fractions when memorisation is zero by construction: each
  example's mask column permuted across the K models (one permutation for every size), the
  same estimator, tolerance and classifier at the same K on the run's own correctness.

  groups: optional {name: (N,) bool}; then returns {'all': (D, C), name: (D, C) the fractions
  within the group}.
  """
  masks = scores_lib.check_masks(masks)
  correct = _check_correct_by_size(masks, correct_by_size)
  if not isinstance(num_draws, (int, np.integer)) or num_draws < 2:
    raise scores_lib.MemorisationInputError(f'num_draws must be a whole number >= 2, got '
                                            f'{num_draws!r}.')
  rng = np.random.default_rng(rng)
  out = {'all': []}
  groups = dict(groups or {})
  for name in groups:
    out[name] = []
  for _ in range(num_draws):
    cls = classify(*_scores(permuted_masks(masks, rng), correct, z, floor))
    out['all'].append(fractions(cls))
    for name, g in groups.items():
      out[name].append(fractions(cls[np.asarray(g, bool)]))
  out = {k: np.stack(v) for k, v in out.items()}
  return out if groups else out['all']


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

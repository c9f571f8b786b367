"""Feldman's memorisation score by subsampling, the C-score, influence on test examples.

    masks = scores.subset_masks(num_models=64, num_examples=N, fraction=0.7, seed=0)   # (K, N)
    s = scores.memorisation(masks, correct_train)          # correct_train: (K, N) 0/1
    s.mem, s.cscore, s.se                                  # (N,) each
    infl = scores.influence(masks, correct_test)           # (N, N_test)

    mem(i) = mean_{k: i in S_k} c_ki - mean_{k: i not in S_k} c_ki

with c_ki = 1[argmax h_k(x_i) = y_i] and each mean divided by max(count, 1e-10), as in Feldman and
Zhang's released estimator; the second term alone is the C-score (held-out consistency). The
influence of training example i on test example j is the same difference on test correctness.
Masks are a pure function of (seed, k), so every model size reuses them and trajectories across
sizes are paired.
"""

from __future__ import annotations

import dataclasses

import numpy as np

COUNT_FLOOR = 1e-10  # Feldman-Zhang's floor on the number of models in / out of an example


class MemorisationInputError(ValueError):
  """Inputs the estimator cannot use; the message says what was expected."""


def check_fraction(fraction) -> float:
  if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.floating)) \
      or not np.isfinite(fraction) or not 0.0 < float(fraction) < 1.0:
    raise MemorisationInputError(
        f'The subset fraction f must lie strictly between 0 and 1 (each model sees int(f N) '
        f'examples and misses the rest), got {fraction!r}.')
  return float(fraction)


def subset_size(num_examples: int, fraction: float) -> int:
  """int(f N), checked to leave at least one example in and one out of every subset."""
  fraction = check_fraction(fraction)
  size = int(fraction * num_examples)
  if not 0 < size < num_examples:
    raise MemorisationInputError(
        f'int(f N) = int({fraction} x {num_examples}) = {size}: a subset must hold at least one '
        'example and miss at least one.')
  return size


def subset_masks(num_models: int, num_examples: int, fraction: float = 0.7,
                 seed: int = 0) -> np.ndarray:
  """(K, N) bool: model k's subset, int(f N) examples drawn without replacement, seeded per model.

  Row k depends only on (seed, k, N, f): a run with more models keeps the first rows.
  """
  if isinstance(num_models, bool) or not isinstance(num_models, (int, np.integer)) \
      or num_models < 2:
    raise MemorisationInputError(f'num_models must be a whole number >= 2, got {num_models!r}.')
  size = subset_size(num_examples, fraction)
  masks = np.zeros((num_models, num_examples), bool)
  for k in range(num_models):
    masks[k, np.random.default_rng([seed, k]).choice(num_examples, size, replace=False)] = True
  return masks


def check_masks(masks, num_examples: int | None = None) -> np.ndarray:
  """(K, N) 0/1 masks in which every example is in some subset and out of some other.

  Raises MemorisationInputError naming how many examples are never in / never out (K too small).
  """
  masks = np.asarray(masks)
  if masks.ndim != 2:
    raise MemorisationInputError(f'masks must be (num_models, num_examples), got shape '
                                 f'{masks.shape}.')
  if num_examples is not None and masks.shape[1] != num_examples:
    raise MemorisationInputError(f'masks cover {masks.shape[1]} examples, expected '
                                 f'{num_examples}.')
  if masks.dtype != bool:
    if not np.issubdtype(masks.dtype, np.number) or not np.all(np.isin(masks, (0, 1))):
      raise MemorisationInputError('masks must be 0/1 (or bool): whether model k saw example i.')
    masks = masks.astype(bool)
  never_in = int(np.sum(~masks.any(0)))
  never_out = int(np.sum(masks.all(0)))
  if never_in or never_out:
    raise MemorisationInputError(
        f'K = {masks.shape[0]} subsets are too few: {never_in} of {masks.shape[1]} examples are in '
        f'no subset and {never_out} are in every subset, so their memorisation (in minus out) '
        'cannot be estimated. Train more models (with f = 0.7, K >= 30 covers a few thousand '
        'examples with high probability).')
  return masks


def check_correctness(correct, shape: tuple[int, int] | None = None,
                      name: str = 'correctness') -> np.ndarray:
  """(K, N) 0/1 correctness (argmax == label) as float64; refuses probabilities or losses."""
  correct = np.asarray(correct)
  if correct.ndim != 2:
    raise MemorisationInputError(f'{name} must be (num_models, num_examples) 0/1, got shape '
                                 f'{correct.shape}.')
  if shape is not None and correct.shape != tuple(shape):
    raise MemorisationInputError(f'{name} has shape {correct.shape}, expected {tuple(shape)} '
                                 '(one row per model, one column per example).')
  if correct.dtype == bool:
    return correct.astype(np.float64)
  if not np.issubdtype(correct.dtype, np.number) or not np.all(np.isin(correct, (0, 1))):
    bad = correct.ravel()[~np.isin(correct.ravel(), (0, 1))][:3] \
        if np.issubdtype(correct.dtype, np.number) else correct.dtype
    raise MemorisationInputError(
        f'{name} must be 0/1 (argmax == label), not probabilities, losses or logits; found '
        f'{bad}. Use common.ensemble.correctness(logits, labels).')
  return correct.astype(np.float64)


def check_labels(labels, num_classes: int, name: str = 'labels') -> np.ndarray:
  labels = np.asarray(labels)
  if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
    raise MemorisationInputError(f'{name} must be (N,) integer class ids, got {labels.dtype} '
                                 f'{labels.shape}.')
  if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
    raise MemorisationInputError(f'{name} must lie in [0, {num_classes}); got values from '
                                 f'{labels.min()} to {labels.max()}.')
  return labels


@dataclasses.dataclass
class Scores:
  """Per training example (N,): memorisation, its two terms, their counts and standard error."""
  mem: np.ndarray          # in_accuracy - cscore
  in_accuracy: np.ndarray  # mean correctness over the models that saw i
  cscore: np.ndarray       # mean correctness over the models that did not (held-out consistency)
  num_in: np.ndarray
  num_out: np.ndarray
  se: np.ndarray           # sqrt(a (1 - a) / n_in + b (1 - b) / n_out), binomial plug-in


def _in_out(masks: np.ndarray, correct: np.ndarray):
  """Mean over in-models and out-models of each column of correct: (N,) each, and counts."""
  m = masks.astype(np.float64)
  num_in, num_out = m.sum(0), (1.0 - m).sum(0)
  a = (m * correct).sum(0) / np.maximum(num_in, COUNT_FLOOR)
  b = ((1.0 - m) * correct).sum(0) / np.maximum(num_out, COUNT_FLOOR)
  return a, b, num_in, num_out


def standard_error(a, b, num_in, num_out) -> np.ndarray:
  """Standard error of a - b, two independent binomial means over n_in and n_out models."""
  return np.sqrt(a * (1 - a) / np.maximum(num_in, 1.0) + b * (1 - b) / np.maximum(num_out, 1.0))


def memorisation(masks, correct) -> Scores:
  """Memorisation, C-score and standard error of every training example.

  masks: (K, N) whether model k saw example i; correct: (K, N) 0/1 correctness of model k on
  training example i (with the labels it was trained on).
  """
  masks = check_masks(masks)
  correct = check_correctness(correct, masks.shape)
  a, b, num_in, num_out = _in_out(masks, correct)
  return Scores(mem=a - b, in_accuracy=a, cscore=b, num_in=num_in, num_out=num_out,
                se=standard_error(a, b, num_in, num_out))


def influence(masks, correct_test) -> np.ndarray:
  """(N, N_test): infl(i, j) = mean test correctness on j over models with i minus without i."""
  masks = check_masks(masks)
  correct_test = check_correctness(correct_test, name='test correctness')
  if correct_test.shape[0] != masks.shape[0]:
    raise MemorisationInputError(f'test correctness has {correct_test.shape[0]} models, the masks '
                                 f'{masks.shape[0]}.')
  m = masks.astype(np.float64)
  num_in, num_out = m.sum(0), (1.0 - m).sum(0)
  with_i = m.T @ correct_test / np.maximum(num_in, COUNT_FLOOR)[:, None]
  without_i = (1.0 - m).T @ correct_test / np.maximum(num_out, COUNT_FLOOR)[:, None]
  return with_i - without_i


def per_model_mean(masks, values, seen: bool = True) -> np.ndarray:
  """(N,) mean of values (K, N) over the models that saw (seen=True) / did not see each example."""
  masks = np.asarray(masks, bool)
  values = np.asarray(values, np.float64)
  w = masks if seen else ~masks
  return (w * values).sum(0) / np.maximum(w.sum(0), COUNT_FLOOR)

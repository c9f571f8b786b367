"""A dataset split by class into the SCOD experiment's parts (numpy only).

From the training split: inliers for training, validation and the wild mixture; labelled
auxiliary outliers (train / validation); test-type outliers for the wild mixture (unlabelled to
the methods). From the test split: inliers and test-type outliers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from abstain import checks


def _take(arrays: dict[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
  return {k: np.asarray(v)[idx] for k, v in arrays.items()}


def _cut(idx: np.ndarray, fractions) -> list[np.ndarray]:
  """Consecutive pieces of `idx` with the given fractions (the rest goes to the last piece)."""
  bounds = np.cumsum([0] + [int(round(f * len(idx))) for f in fractions])
  return [idx[a:b] for a, b in zip(bounds[:-1], bounds[1:])] + [idx[bounds[-1]:]]


def build(train: dict[str, np.ndarray], test: dict[str, np.ndarray], spec,
          wild_pi: float, seed: int, outlier_train: dict[str, np.ndarray] | None = None,
          outlier_test: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
  """The parts of one seed. Inlier labels become 0..K-1 (positions in spec.inlier_classes).

  Returns {'train_in', 'val_in', 'aux_train', 'aux_val', 'wild_train', 'wild_val', 'test'}
  (arrays with 'inputs', 'label' and, where outliers can be, 'is_outlier') and the realised
  'wild_pi' of the wild parts.
  """
  wild_pi = checks.check_unit(wild_pi, 'wild_pi', open_low=True, open_high=True)
  outlier_train = train if outlier_train is None else outlier_train
  outlier_test = test if outlier_test is None else outlier_test
  inlier_classes = np.asarray(spec.inlier_classes)
  aux_classes, out_classes = np.asarray(spec.aux_classes), np.asarray(spec.test_outlier_classes)
  same = outlier_train is train
  if same and (set(inlier_classes) & set(out_classes) or set(aux_classes) & set(out_classes)
               or set(inlier_classes) & set(aux_classes)):
    raise checks.AbstainInputError(
        f'inlier {tuple(inlier_classes)}, auxiliary {tuple(aux_classes)} and test-outlier '
        f'{tuple(out_classes)} classes must be disjoint.')
  rng = np.random.default_rng(seed)
  relabel = np.full(max(int(np.max(train['label'])), int(inlier_classes.max())) + 1, -1)
  relabel[inlier_classes] = np.arange(len(inlier_classes))

  def inliers(arrays, idx):
    out = _take(arrays, idx)
    out['label'] = relabel[out['label']].astype(np.int32)
    out['is_outlier'] = np.zeros(len(idx), bool)
    return out

  def outliers(arrays, idx):
    out = _take(arrays, idx)
    out['label'] = np.zeros(len(idx), np.int32)  # no class: never scored as correct
    out['is_outlier'] = np.ones(len(idx), bool)
    return out

  def concat(a, b, shuffle=True):
    out = {k: np.concatenate([a[k], b[k]]) for k in a}
    order = rng.permutation(len(out['label'])) if shuffle else np.arange(len(out['label']))
    return _take(out, order)

  inl = rng.permutation(np.nonzero(np.isin(train['label'], inlier_classes))[0])
  val_idx, wild_idx, train_idx = _cut(inl, (spec.val_fraction, spec.wild_fraction))
  aux = rng.permutation(np.nonzero(np.isin(train['label'], aux_classes))[0])
  aux_val_idx, aux_train_idx = _cut(aux, (spec.aux_val_fraction,))
  pool = rng.permutation(np.nonzero(np.isin(outlier_train['label'], out_classes))[0])
  n_wild_out = min(len(pool), int(round(len(wild_idx) * wild_pi / (1 - wild_pi))))
  if n_wild_out == 0 or len(train_idx) == 0 or len(aux_train_idx) == 0:
    raise checks.AbstainInputError(
        f'Too few examples to split: {len(train_idx)} training inliers, {len(aux_train_idx)} '
        f'auxiliary outliers, {n_wild_out} outliers for the wild mixture.')
  wild = concat(inliers(train, wild_idx), outliers(outlier_train, pool[:n_wild_out]))
  wild_val_idx, wild_train_idx = _cut(np.arange(len(wild['label'])), (spec.wild_val_fraction,))
  test_in = np.nonzero(np.isin(test['label'], inlier_classes))[0]
  test_out = np.nonzero(np.isin(outlier_test['label'], out_classes))[0]
  return {
      'train_in': inliers(train, train_idx),
      'val_in': inliers(train, val_idx),
      'aux_train': outliers(train, aux_train_idx),
      'aux_val': outliers(train, aux_val_idx),
      'wild_train': _take(wild, wild_train_idx),
      'wild_val': _take(wild, wild_val_idx),
      'test': concat(inliers(test, test_in), outliers(outlier_test, test_out), shuffle=False),
      'wild_pi': n_wild_out / len(wild['label']),
      'num_classes': len(inlier_classes),
  }

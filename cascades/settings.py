"""The paper's four settings as transformations of (train, held-out, test) arrays [recon details].

standard      h1 and h2 see the same data; h2 is uniformly better.
specialist    h2 is trained only on `specialist_classes`.
label_noise   the labels of `noisy_classes` are replaced by uniform random labels in train, held-out
              and test (the test then rewards nobody on those classes).
shift         the training set keeps 1 in `tail_factor` examples of `tail_classes` (long-tailed);
              the test set stays balanced; the held-out set follows the training distribution
              unless `shift_heldout_balanced` (post-hoc then sees the test distribution).
"""

from __future__ import annotations

import numpy as np

SETTINGS = ('standard', 'specialist', 'label_noise', 'shift')


def _take(arrays, mask):
  return {k: v[mask] for k, v in arrays.items()}


def _noisy(arrays, classes, num_classes, rng):
  out = dict(arrays)
  hit = np.isin(arrays['label'], classes)
  labels = arrays['label'].copy()
  labels[hit] = rng.integers(0, num_classes, hit.sum())
  out['label'] = labels.astype(arrays['label'].dtype)
  return out


def _long_tailed(arrays, classes, factor, rng):
  tail = np.isin(arrays['label'], classes)
  keep = ~tail | (rng.random(len(tail)) < 1.0 / factor)
  return _take(arrays, keep)


def build(setting: str, train, heldout, test, *, num_classes: int, seed: int,
          specialist_classes=(0, 1, 2, 3, 4), noisy_classes=(7, 8, 9), tail_classes=(5, 6, 7, 8, 9),
          tail_factor: int = 10,
          shift_heldout_balanced: bool = False) -> dict[str, dict[str, np.ndarray]]:
  """{'train_h1', 'train_h2', 'heldout', 'test'} arrays for one setting and seed."""
  rng = np.random.default_rng(seed)
  if setting == 'standard':
    return {'train_h1': train, 'train_h2': train, 'heldout': heldout, 'test': test}
  if setting == 'specialist':
    return {'train_h1': train,
            'train_h2': _take(train, np.isin(train['label'], specialist_classes)),
            'heldout': heldout, 'test': test}
  if setting == 'label_noise':
    train, heldout, test = (_noisy(a, noisy_classes, num_classes, rng)
                            for a in (train, heldout, test))
    return {'train_h1': train, 'train_h2': train, 'heldout': heldout, 'test': test}
  if setting == 'shift':
    train = _long_tailed(train, tail_classes, tail_factor, rng)
    if not shift_heldout_balanced:
      heldout = _long_tailed(heldout, tail_classes, tail_factor, rng)
    return {'train_h1': train, 'train_h2': train, 'heldout': heldout, 'test': test}
  raise ValueError(f'Unknown setting {setting!r}; use {SETTINGS}.')

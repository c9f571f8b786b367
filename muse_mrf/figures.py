"""The experiment's figures: sample grids per sampler, and quality against backbone calls."""

from __future__ import annotations

import numpy as np

from common import report


def plot_samples(images: dict[str, np.ndarray], asked, num_classes: int, path: str,
                 per_class: int = 8, max_classes: int = 10) -> str:
  """A grid per sampler: a row per asked class (the first max_classes of them), per_class
  samples each; grey images (C = 1) in grey, colour ones (C = 3) as they are."""
  plt = report.pyplot()
  names = list(images)
  classes = [c for c in range(num_classes) if np.any(asked == c)][:max_classes]
  cols = min(len(names), 5)
  rows_ = -(-len(names) // cols)
  fig, axes = plt.subplots(rows_, cols, figsize=(2.6 * cols, 3.4 * rows_), squeeze=False)
  axes = axes.reshape(-1)
  for ax in axes[len(names):]:
    ax.axis('off')
  for ax, name in zip(axes, names):
    imgs = images[name]
    grey = imgs.shape[-1] == 1
    imgs = imgs[..., 0] if grey else np.clip(imgs, 0.0, 1.0)
    rows = []
    for c in classes:
      pick = imgs[asked == c][:per_class]
      rows.append(np.concatenate(list(pick) + [np.zeros((imgs.shape[1], 0) + imgs.shape[3:])],
                                 axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, [(0, 0), (0, width - r.shape[1])] + [(0, 0)] * (r.ndim - 2)) for r in rows]
    if grey:
      ax.imshow(np.concatenate(rows, 0), cmap='gray_r', vmin=0, vmax=1)
    else:
      ax.imshow(np.concatenate(rows, 0))
    ax.set_title(name, fontsize=8)
    ax.axis('off')
  return report.save_figure(fig, path, dpi=110)


def plot_quality(rows, real_row, path: str) -> str:
  plt = report.pyplot()
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
  for kind, style, label in (('plain', 'o-', 'MaskGIT'), ('mrf', 's-', "MaskGIT + MRF last step")):
    pts = sorted((r['backbone_calls'], r['accuracy'], r['fd']) for r in rows.values()
                 if r['kind'] == kind)
    if pts:
      calls, acc, fd = zip(*pts)
      ax1.plot(calls, acc, style, label=label)
      ax2.plot(calls, fd, style, label=label)
  ax1.axhline(real_row['accuracy'], color='gray', ls='--', label='held-out real digits')
  ax2.axhline(real_row['fd'], color='gray', ls='--', label='held-out real digits')
  ax1.set_xlabel('backbone calls per sample')
  ax1.set_ylabel('class accuracy (scorer)')
  ax2.set_xlabel('backbone calls per sample')
  ax2.set_ylabel('Frechet distance (scorer features)')
  ax1.legend(fontsize=7)
  ax2.legend(fontsize=7)
  return report.save_figure(fig, path, dpi=90)

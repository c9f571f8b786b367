"""Figures: memorisation against size (mean, per class, mislabelled vs clean), example inputs of
each trajectory class, proxy correlations by size."""

from __future__ import annotations

import os

import numpy as np

from common import report
from memorisation import trajectories


def _against_size(name, result, path) -> str:
  plt = report.pyplot()
  nb, mem, classes = result['numbers'], result['mem'], result['classes']
  x = np.arange(len(nb['sizes']))
  fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
  ax = axes[0]
  ax.plot(x, nb['mean_mem'], 'ko-', label='all')
  if nb['mean_mem_mislabelled']:
    ax.plot(x, nb['mean_mem_mislabelled'], 'r^-', label=f'mislabelled ({nb["num_mislabelled"]})')
    ax.plot(x, nb['mean_mem_clean'], 'bs-', label='clean')
  ax2 = ax.twinx()
  ax2.plot(x, result['test_accuracy'], 'g--', label='test accuracy')
  ax2.set_ylabel('test accuracy (subset models)', color='g')
  ax.set_ylabel('mean memorisation')
  ax.legend(fontsize=8)
  ax.set_title(f'{name}: memorisation against size')
  ax = axes[1]
  for i, cls in enumerate(trajectories.CLASSES):
    if np.any(classes == i):
      frac = nb['class_fraction'][cls]
      ax.plot(x, mem[:, classes == i].mean(1), 'o-', label=f'{cls} ({frac:.1%})')
  ax.set_ylabel('mean memorisation of the class')
  ax.legend(fontsize=8)
  ax.set_title('per trajectory class')
  ax = axes[2]
  fr = [nb['class_fraction'][c] for c in trajectories.CLASSES]
  lo = [nb['class_interval_models'][c][0] for c in trajectories.CLASSES]
  hi = [nb['class_interval_models'][c][1] for c in trajectories.CLASSES]
  err = np.clip([np.subtract(fr, lo), np.subtract(hi, fr)], 0, None)  # a point can lie outside
  ax.bar(trajectories.CLASSES, fr, yerr=err, capsize=4)
  ax.set_ylabel('fraction of examples (95% interval)')
  ax.set_title('trajectory classes')
  for a in axes[:2]:
    a.set_xticks(x)
    a.set_xticklabels(nb['sizes'])
    a.set_xlabel('width')
  return report.save_figure(fig, path, dpi=80)


def _examples(config, name, result, path, per_class: int = 6) -> str:
  plt = report.pyplot()
  mem, classes, train = result['mem'], result['classes'], result['train']
  shape = tuple(config.datasets[name].image_shape)
  rows = [i for i in range(len(trajectories.CLASSES) - 1)]
  fig, axes = plt.subplots(len(rows), per_class, figsize=(1.8 * per_class, 1.9 * len(rows)))
  rng = np.random.default_rng(0)
  for r, c in enumerate(rows):
    idx = np.flatnonzero(classes == c)
    pick = rng.choice(idx, min(per_class, len(idx)), replace=False) if len(idx) else []
    for col in range(per_class):
      ax = axes[r, col]
      ax.set_xticks([])
      ax.set_yticks([])
      if col == 0:
        ax.set_ylabel(trajectories.CLASSES[c])
      if col >= len(pick):
        continue
      i = pick[col]
      x = np.asarray(train['inputs'][i])
      if len(shape) >= 2:
        ax.imshow(x.reshape(shape).squeeze(), cmap='gray_r')
      else:
        ax.plot(x.ravel())
      flip = '*' if result['flipped'][i] else ''
      ax.set_title(f'y={train["label"][i]}{flip} m:{mem[0, i]:.1f}->{mem[-1, i]:.1f}', fontsize=7)
  fig.suptitle(f'{name}: examples per trajectory class (* flipped label; mem smallest -> largest)',
               fontsize=9)
  return report.save_figure(fig, path, dpi=80)


def _proxies(name, result, path) -> str:
  plt = report.pyplot()
  nb = result['numbers']
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  ax = axes[0]
  x = np.arange(len(nb['sizes']))
  for p, corr in nb['proxy_corr_by_size'].items():
    ax.plot(x, corr, 'o-', label=p)
  ax.axhline(0, color='k', lw=0.5)
  ax.set_xticks(x)
  ax.set_xticklabels(nb['sizes'])
  ax.set_xlabel('width')
  ax.set_ylabel('Spearman with memorisation')
  ax.set_title(f'{name}: proxies at each size')
  ax.legend(fontsize=7)
  ax = axes[1]
  names = list(nb['proxy_trend'])
  fixed = [np.median(np.abs(nb['proxy_corr_by_size'][p])) for p in names]
  change = [nb['proxy_trend'][p]['change_corr'] for p in names]
  pos = np.arange(len(names))
  ax.bar(pos - 0.2, fixed, 0.4, label='|corr| at fixed size (median)')
  ax.bar(pos + 0.2, change, 0.4, label='corr of the change across sizes')
  ax.set_xticks(pos)
  ax.set_xticklabels(names, rotation=30, fontsize=8)
  ax.legend(fontsize=7)
  ax.set_title('fixed size vs trend')
  return report.save_figure(fig, path, dpi=80)


def plot_dataset(config, name, result, workdir) -> list[str]:
  return [_against_size(name, result, os.path.join(workdir, f'memorisation_{name}.png')),
          _examples(config, name, result, os.path.join(workdir, f'examples_{name}.png')),
          _proxies(name, result, os.path.join(workdir, f'proxies_{name}.png'))]

"""Diagnostics of a trained FIRE: its learned c, L and f per layer, and a figure of f per head.

The other diagnostic, the same weights evaluated with the normaliser frozen at row T - 1, is an
evaluation with `fire_overrides` (fire_pe.evaluation); its rows carry the FROZEN suffix.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from common import report

FROZEN = '_frozen_normaliser'   # suffix of a diagnostic row (a FIRE encoding's name before it)


def _affine_r2(x, y):
  """R^2 of the least-squares affine fit of y(x) (1 when y is constant)."""
  design = np.stack([x, np.ones_like(x)], axis=1)
  residual = y - design @ np.linalg.lstsq(design, y, rcond=None)[0]
  total = ((y - y.mean()) ** 2).sum()
  return 1.0 if total < 1e-12 else float(1.0 - (residual ** 2).sum() / total)


def learned_fire(config, params) -> dict[str, Any]:
  """FIRE's learned c, L and f per layer (or the shared module): f on a grid of [0, 1] per head,
  its affine fit's R^2 per head, its hidden units dead on all of [0, 1], and the factor by which
  the growing normaliser shrinks the last row's inputs at each eval length, psi(max(L, T-1)) /
  psi(max(L, N-1)) (1 at the train length)."""
  modules = ({'shared': params['position']} if 'position' in params else
             {name: p['position'] for name, p in sorted(params.items())
              if isinstance(p, dict) and 'position' in p})
  fraction = config.fire.init_threshold_fraction
  init_threshold = fraction * config.train_length
  grid = np.linspace(0.0, 1.0, 101)
  out = {}
  for name, p in modules.items():
    depth = sum(1 for k in p if k.startswith('w')) - 1
    mlp = [(np.asarray(p[f'w{n}'], np.float64), np.asarray(p[f'b{n}'], np.float64))
           for n in range(depth + 1)]
    h, dead = grid[:, None], []
    for w, b in mlp[:-1]:
      h = np.maximum(h @ w + b, 0.0)
      dead.append(int(((h > 0).sum(axis=0) == 0).sum()))
    f = h @ mlp[-1][0] + mlp[-1][1]                            # (grid, H)
    c = abs(float(p['c']))
    threshold = abs(float(p.get('threshold_mult', 1.0)) * init_threshold)
    psi = lambda pos: np.log1p(c * max(threshold, pos))
    out[name] = {
        'c': round(c, 4), 'threshold': round(threshold, 2),
        'affine_r2': [round(_affine_r2(grid, f[:, k]), 5) for k in range(f.shape[1])],
        'dead_units': dead,
        'normaliser_scale': {str(factor): round(float(psi(config.train_length - 1)
                                                      / psi(factor * config.train_length - 1)), 3)
                             for factor in config.eval_factors},
        'f': {'x': grid.round(3).tolist(), 'heads': f.T.round(4).tolist()}}
  return out


def plot_f(learned: dict[str, dict], path: str):
  """f per head for each diagnosed encoding's layers (one panel per layer)."""
  plt = report.pyplot()
  panels = [(enc, layer, d) for enc, layers in learned.items() for layer, d in layers.items()]
  fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.0), squeeze=False)
  for ax, (enc, layer, d) in zip(axes[0], panels):
    for k, ys in enumerate(d['f']['heads']):
      ax.plot(d['f']['x'], ys, label=f'head {k} (R^2 {d["affine_r2"][k]:.3f})')
    ax.set_title(f'{enc} {layer}: c {d["c"]:.2f}, L {d["threshold"]:.0f}', fontsize=8)
    ax.set_xlabel('input psi(i-j) / psi(max(L, i))')
    ax.legend(fontsize=6)
  axes[0][0].set_ylabel('learned f (bias)')
  return report.save_figure(fig, path, dpi=90)

"""The experiment's figures on mnist1d / digits: SCOD risk against budget, risk-coverage curves."""

from __future__ import annotations

import numpy as np

from common import report

PLOTTED = ('msp', 'energy', 'mahalanobis', 'outlier_exposure', 'ood', 'sirc', 'linear_double',
           'plugin', 'plugin_black_box', 'plugin_corrected_sigmoid')


def plot_risks(name, config, per_setting, settings, path):
  """Risk against budget per method (PLOTTED), one panel per setting and c_fn (means over seeds)."""
  plt = report.pyplot()
  fig, axes = plt.subplots(len(settings), len(config.c_fns),
                           figsize=(4.2 * len(config.c_fns), 3.6 * len(settings)), squeeze=False)
  for i, setting in enumerate(settings):
    rows = per_setting[setting]
    for j, c in enumerate(config.c_fns):
      ax = axes[i][j]
      for m in PLOTTED:
        if m in rows[0]['risk'][c]:
          style = '--' if m.startswith('plugin') else '-'
          ax.plot(config.budgets, np.mean([r['risk'][c][m] for r in rows], 0), style, label=m,
                  lw=2 if m == 'plugin' else 1)
      ax.set_title(f'{name}: {setting} outliers, c_fn={c}')
      ax.set_xlabel('budget (abstention rate)')
      ax.set_ylabel('SCOD risk')
  axes[0][0].legend(fontsize=6)
  return report.save_figure(fig, path, dpi=80)


def plot_coverage(name, per_setting, settings, path):
  """Seed 0's risk-coverage curves per setting."""
  plt = report.pyplot()
  fig, axes = plt.subplots(1, len(settings), figsize=(5 * len(settings), 3.6), squeeze=False)
  for ax, setting in zip(axes[0], settings):
    curves = per_setting[setting][0]['curves']  # seed 0
    for m, curve in curves.items():
      ax.plot(curve.coverage, curve.risk, label=f'{m} (AURC {curve.aurc:.3f})')
    ax.set_title(f'{name}: {setting} (seed 0)')
    ax.set_xlabel('coverage')
    ax.set_ylabel('selective risk (errors + outliers accepted)')
    ax.legend(fontsize=6)
  return report.save_figure(fig, path, dpi=80)

"""The experiment: (A) the one-step sweep and its fitted exponents, (B) the training check.

    python -m mup_depth.main --config=configs/mup_depth/sweep.py:cpu --workdir=/tmp/mup

Writes workdir/summary.json (the claim checked), sweep.npz (every measurement), eta_vs_depth.png
and training_check.png; as the sweeps go, each (n, L) cell's measurements to workdir/cells (a
rerun reads back the cells measured under the same settings: a stopped run resumes) and a record
per cell to metrics.jsonl.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

from absl import logging
import jax
import ml_collections
import numpy as np

from common import config_lib
from common import metrics as metrics_lib
from common import report
from common.data import loader
from mup_depth import claims
from mup_depth import sweep as sweep_lib
from mup_depth import training_check

CLAIM = ('For mean-field ReLU MLPs the maximal-update learning rate of the hidden layers scales '
         'like L^(-3/2) in depth and does not depend on width: fitted exponent in L within '
         '[-1.65, -1.35] (n >> L) and in n within +-0.1.')


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError (naming the dotted field) for a config that cannot run or would fail
  after the sweep; reads only the config (no data, no compile). Called at the top of `run` and by
  common.app before anything runs."""
  for section in ('sweep', 'contrast'):
    if section == 'contrast' and not config_lib.flag(config, 'contrast.enabled'):
      continue
    config_lib.whole_tuple(config, f'{section}.widths', 1)
    config_lib.whole_tuple(config, f'{section}.depths', 1)
    for field in ('num_seeds', 'batch_size', 'input_dim'):
      config_lib.whole(config, f'{section}.{field}', 1)
    config_lib.real(config, f'{section}.threshold', 0.0, open_low=True)
    config_lib.flag(config, f'{section}.exact')
    config_lib.whole(config, f'{section}.seed', 0)
  if len(set(config.sweep.widths)) < 2:
    raise config_lib.ConfigError(
        f'sweep.widths={tuple(config.sweep.widths)}: the exponent in n (a deciding check) needs '
        'two widths or more.')
  min_depth = config_lib.whole(config, 'fit_min_depth', 1)
  fitted = [d for d in config.sweep.depths if d >= min_depth]
  if len(set(fitted)) < 2:
    raise config_lib.ConfigError(
        f'fit_min_depth={min_depth} leaves {len(set(fitted))} of sweep.depths='
        f'{tuple(config.sweep.depths)} in the fit: the exponent in L needs two depths >= '
        'fit_min_depth (lower it, or add depths).')
  config_lib.whole(config, 'num_bootstrap', 1)
  if config_lib.flag(config, 'training.enabled'):
    if not isinstance(config.training.dataset, str) or not config.training.dataset:
      raise config_lib.ConfigError(f'training.dataset={config.training.dataset!r}: expected a '
                                   'dataset name.')
    config_lib.whole(config, 'training.width', 1)
    depths = config_lib.whole_tuple(config, 'training.depths', 1)
    base = config_lib.whole(config, 'training.base_depth', 1)
    if base not in depths:
      raise config_lib.ConfigError(f'training.base_depth={base} is not in training.depths='
                                   f'{depths}: the rate tuned there is carried to the others.')
    low = config_lib.real(config, 'training.lr_min', 0.0, open_low=True)
    config_lib.real(config, 'training.lr_max', low, open_low=True)
    for field in ('num_lrs', 'batch_size', 'epochs'):
      config_lib.whole(config, f'training.{field}', 1)
    config_lib.whole(config, 'training.seed', 0)
  for field in ('exponent_L', 'exponent_n'):
    bounds = config_lib.real_tuple(config, f'checks.{field}', -math.inf, math.inf)
    if len(bounds) != 2 or bounds[0] > bounds[1]:
      raise config_lib.ConfigError(f'checks.{field}={tuple(config.checks[field])!r}: expected '
                                   '(low, high) with low <= high.')
  config_lib.real(config, 'checks.transfer_win_fraction', 0.0)
  for m in config_lib.whole_tuple(config, 'diagnosis_min_depths', 1):
    kept = {d for d in config.sweep.depths if d >= m}
    if len(kept) < 2:
      raise config_lib.ConfigError(
          f'diagnosis_min_depths={tuple(config.diagnosis_min_depths)}: {m} leaves {len(kept)} of '
          f'sweep.depths={tuple(config.sweep.depths)} in its fit; each needs two depths >= it '
          '(drop it, or add depths).')


class _Progress:
  """metrics.jsonl: one record per (n, L) cell of the sweeps as it finishes (step = the cell's
  number, in order; `reused`: read back from workdir/cells, measured by an earlier run)."""

  def __init__(self, workdir: str):
    self.writer = metrics_lib.MetricWriter(workdir, tensorboard=False)
    self.step = 0

  def cell(self, parameterisation: str, threshold: float):
    def record(width, depth, coefficient, eta_exact, reused):
      self.step += 1
      values = {'width': width, 'depth': depth, 'standard': float(parameterisation == 'standard'),
                'eta_linear_mean': float(np.sqrt(threshold / np.mean(coefficient))),
                'reused': float(reused)}
      if eta_exact is not None:
        values['eta_exact_median'] = float(np.nanmedian(eta_exact)) if np.isfinite(
            eta_exact).any() else float('nan')
      self.writer.write(self.step, values)
    return record


def _sweep(cfg: ml_collections.ConfigDict, parameterisation: str, workdir: str | None = None,
           progress: _Progress | None = None) -> sweep_lib.SweepResult:
  """The sweep of `cfg`; with a workdir, its cells saved under workdir/cells as they finish and
  reused by a rerun (a stopped run resumes)."""
  return sweep_lib.run_sweep(
      widths=tuple(cfg.widths), depths=tuple(cfg.depths), num_seeds=cfg.num_seeds,
      batch_size=cfg.batch_size, input_dim=cfg.input_dim, threshold=cfg.threshold,
      parameterisation=parameterisation, exact=cfg.exact, seed=cfg.seed,
      cell_dir=os.path.join(workdir, 'cells') if workdir else None,
      on_cell=progress.cell(parameterisation, cfg.threshold) if progress else None)


def _plot_sweep(result, fit, contrast, path):
  plt = report.pyplot()
  fig, ax = plt.subplots(figsize=(6, 4.5))
  depths = np.array(result.depths, float)
  eta = result.eta_linear()
  for i, n in enumerate(result.widths):
    line, = ax.loglog(depths, eta[i], 'o-', label=f'mean-field n={n} (linearised, mean)')
    if result.eta_exact is not None:
      ax.loglog(depths, result.eta_exact_median()[i], 'x:', color=line.get_color(),
                label=f'n={n} exact, median')
    fitted = np.exp(fit['log_prefactor'] + fit['exponent_L'] * np.log(depths)
                    + (fit['exponent_n'] * np.log(n) if np.isfinite(fit['exponent_n']) else 0))
    ax.loglog(depths, fitted, '--', color=line.get_color(), alpha=0.6)
  if contrast is not None:
    for i, n in enumerate(contrast.widths):
      ax.loglog(np.array(contrast.depths, float), contrast.eta_linear()[i], 's-', alpha=0.5,
                label=f'standard n={n}')
  ax.set_xticks(depths, [str(int(d)) for d in depths])
  ax.xaxis.set_minor_formatter(plt.NullFormatter())
  ax.set_xlabel('depth L')
  ax.set_ylabel('eta*')
  ax.set_title(f'eta* ~ L^{fit["exponent_L"]:.2f} n^{fit["exponent_n"]:.2f} (fit over L >= '
               f'{fit["min_depth"]})')
  ax.legend(fontsize=7, loc='lower left')
  return report.save_figure(fig, path)


def _plot_training(lrs, per_depth, path):
  plt = report.pyplot()
  fig, ax = plt.subplots(figsize=(6, 4))
  for depth, s in per_depth.items():
    loss = np.asarray(s['final_loss'], float)
    ax.semilogx(lrs, np.where(np.isfinite(loss), loss, np.nan), 'o-', label=f'L={depth}')
  ax.set_xlabel('hidden-layer learning rate')
  ax.set_ylabel('train loss after training')
  ax.set_ylim(top=2.5)
  ax.legend()
  return report.save_figure(fig, path)


def run_training_check(cfg: ml_collections.ConfigDict) -> tuple[np.ndarray, dict]:
  arrays = loader.load(cfg.dataset, 'train', **dict(cfg.dataset_kwargs))
  lrs = np.geomspace(cfg.lr_min, cfg.lr_max, cfg.num_lrs)
  per_depth = {}
  for depth in cfg.depths:
    losses = training_check.train_grid(arrays, cfg.width, depth, lrs, batch_size=cfg.batch_size,
                                       epochs=cfg.epochs, seed=cfg.seed)
    per_depth[depth] = training_check.summarise(lrs, losses, initial_loss=float(np.log(10)))
    logging.info('training check L=%d: max stable lr %.3g, best lr %.3g (loss %.3f)', depth,
                 per_depth[depth]['max_stable_lr'], per_depth[depth]['best_lr'],
                 per_depth[depth]['best_loss'])
  depths = list(cfg.depths)
  out = {
      'per_depth': per_depth,
      'slope_best_lr': training_check.slope(depths, [per_depth[d]['best_lr'] for d in depths]),
      'slope_max_stable_lr': training_check.slope(
          depths, [per_depth[d]['max_stable_lr'] for d in depths]),
      'transfer': training_check.transfer(lrs, per_depth, cfg.base_depth),
  }
  return lrs, out


def _contrast_fit(config, contrast):
  """The standard parameterisation's exponents (bootstrap over seeds), None when its grid has
  fewer than two widths or depths (no exponent in n to show)."""
  if contrast is None or len(set(contrast.widths)) < 2 or len(set(contrast.depths)) < 2:
    return None
  return sweep_lib.fit_exponents(contrast, min_depth=min(contrast.depths),
                                 num_bootstrap=config.num_bootstrap)


def _eta_rows(result, values, digits=5):
  return {f'n={n}': dict(zip([f'L={d}' for d in result.depths], np.round(row, digits).tolist()))
          for n, row in zip(result.widths, values)}


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  check_config(config)
  os.makedirs(workdir, exist_ok=True)
  # (A) The one-step sweep, mean-field, and the fits.
  progress = _Progress(workdir)
  result = _sweep(config.sweep, 'mean_field', workdir, progress)
  fits = {e: sweep_lib.fit_exponents(result, min_depth=config.fit_min_depth, estimator=e,
                                     num_bootstrap=config.num_bootstrap)
          for e in (('linear_mean', 'linear_median', 'exact_median') if config.sweep.exact
                    else ('linear_mean', 'linear_median'))}
  primary = fits['linear_mean']
  diagnosis = claims.exponents_by_fit_range(config, result)
  contrast = (_sweep(config.contrast, 'standard', workdir, progress) if config.contrast.enabled
              else None)
  progress.writer.close()
  contrast_fit = _contrast_fit(config, contrast)
  np.savez(os.path.join(workdir, 'sweep.npz'), widths=result.widths, depths=result.depths,
           coefficient=result.coefficient,
           eta_exact=result.eta_exact if result.eta_exact is not None else np.array([]))

  # (B) The training check.
  lrs, check = run_training_check(config.training) if config.training.enabled else (None, None)

  numbers = {
      'eta_star_linear_mean': _eta_rows(result, result.eta_linear()),
      'fits': fits,
      'diagnosis': diagnosis,
      'warnings': result.warnings,
  }
  if result.eta_exact is not None:
    numbers['eta_star_exact_median'] = _eta_rows(result, result.eta_exact_median())
  if contrast is not None:
    mf, sp = result.eta_linear(), contrast.eta_linear()
    numbers['standard_parameterisation'] = {
        'eta_star_linear_mean': _eta_rows(contrast, sp, 6),
        'fit': contrast_fit,
        'exponent_n_at_each_depth': {
            f'L={d}': training_check.slope(contrast.widths, sp[:, j])
            for j, d in enumerate(contrast.depths)},
        'mean_field_over_standard': {
            f'n={n},L={d}': float(mf[result.widths.index(n), result.depths.index(d)] / sp[i, j])
            for i, n in enumerate(contrast.widths) if n in result.widths
            for j, d in enumerate(contrast.depths) if d in result.depths},
    }
  if check is not None:
    numbers['training_check'] = {k: v for k, v in check.items() if k != 'per_depth'}
    numbers['training_check']['best_lr'] = {d: s['best_lr'] for d, s in check['per_depth'].items()}
    numbers['training_check']['max_stable_lr'] = {
        d: s['max_stable_lr'] for d, s in check['per_depth'].items()}
    with open(os.path.join(workdir, 'training_check.json'), 'w') as f:
      json.dump({'lrs': lrs.tolist(), **check}, f, indent=2, default=str)

  figures = []
  if jax.process_index() == 0:
    figures.append(_plot_sweep(result, primary, contrast,
                               os.path.join(workdir, 'eta_vs_depth.png')))
    if check is not None:
      figures.append(_plot_training(lrs, check['per_depth'],
                                    os.path.join(workdir, 'training_check.png')))
  notes = (f'Primary estimator: linearised one-step change, eta* = sqrt(C / mean over '
           f'{config.sweep.num_seeds} seeds of A), fit over L >= {config.fit_min_depth} '
           f'(the card\'s pilot method, fixed before the run). Exponent in L: '
           f'{primary["exponent_L"]:.3f} [{primary["exponent_L_lo"]:.3f}, '
           f'{primary["exponent_L_hi"]:.3f}]; in n: {primary["exponent_n"]:.3f} '
           f'[{primary["exponent_n_lo"]:.3f}, {primary["exponent_n_hi"]:.3f}] (95% bootstrap '
           f'over seeds, {config.num_bootstrap} resamples). The median and the exact (applied '
           'step) estimators are reported beside it: they weigh the heavy tail of the per-seed '
           'change differently.')
  checks = claims.claim_checks(config, primary, contrast_fit, check)
  eta = result.eta_linear()
  tables = [report.table(
      'eta* (linearised one-step estimator, mean over seeds) by width n and depth L',
      ['n'] + [f'L={d}' for d in result.depths],
      [[n] + [float(f'{v:.4g}') for v in row] for n, row in zip(result.widths, eta)],
      note=f'Fit over L >= {config.fit_min_depth}: exponent in L {primary["exponent_L"]:.3f} '
           f'[{primary["exponent_L_lo"]:.3f}, {primary["exponent_L_hi"]:.3f}], in n '
           f'{primary["exponent_n"]:.3f} [{primary["exponent_n_lo"]:.3f}, '
           f'{primary["exponent_n_hi"]:.3f}].')]
  tables += claims.diagnosis_tables(config, diagnosis)
  return report.make_summary(
      name='mup_depth', title='mup_depth: L^(-3/2) depth law of maximal-update learning rates',
      claim=CLAIM, numbers=numbers, checks=checks, tables=tables, workdir=workdir,
      figures=figures, notes=notes, config=config)

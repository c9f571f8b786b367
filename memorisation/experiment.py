"""The experiment: size sweeps on digits (5% flipped labels) and mnist1d, trajectory classes with
bootstrap intervals, proxies, distillation; the checks fixed in the config; figures.

    python -m memorisation.main --config=configs/memorisation/sweep.py:cpu --workdir=/tmp/mem
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from common import report
from memorisation import figures
from memorisation import study
from memorisation import trajectories

CLAIM = ('Per-example memorisation trajectories across model sizes are diverse (most examples '
         'memorise less under larger models; others are cap-shaped or increasing, mislabelled '
         'examples among the increasing); proxies of memorisation correlate with it at a fixed '
         'size but do not capture these trends; distillation inhibits memorisation, mostly on the '
         'increasing examples, without hurting generalisation.')


@contextlib.contextmanager
def prng_impl(name: str | None):
  """jax's default PRNG implementation for the block (None: unchanged), the old one after."""
  if not name:
    yield
    return
  old = jax.config.jax_default_prng_impl
  jax.config.update('jax_default_prng_impl', name)
  try:
    yield
  finally:
    jax.config.update('jax_default_prng_impl', old)


def _median_abs(values) -> float:
  return float(np.median(np.abs(values)))


def make_checks(config, name: str, numbers: dict[str, Any]) -> list[dict[str, Any]]:
  """The checks stated in the config before the run, as report.check entries."""
  c = config.checks
  out = []
  for cls in ('decreasing', 'cap', 'increasing'):
    frac = numbers['class_fraction'][cls]
    lo, hi = numbers['class_interval_examples'][cls]
    mlo, mhi = numbers['class_interval_models'][cls]
    agree = numbers['split_half']['same_class_given_class'][cls]
    out.append(report.check(
        f'{name}/{cls}_fraction', f'{frac:.3f} [{lo:.3f}, {hi:.3f}]',
        f'>= {c.min_class_fraction}, interval > 0', frac >= c.min_class_fraction and lo > 0,
        note=f'95% bootstrap interval over examples; over models and examples [{mlo:.3f}, '
        f'{mhi:.3f}] (biased by duplicated models); split-half: {agree:.2f} of the class in one '
        'half of the models is in it in the other'))
  mis = numbers.get('mislabelled_class_fraction')
  if mis:
    out.append(report.check(f'{name}/mislabelled_in_increasing', round(mis['increasing'], 3),
                            f'> {c.mislabelled_increasing}',
                            mis['increasing'] > c.mislabelled_increasing,
                            note=f'{numbers["num_mislabelled"]} flipped labels; classes {mis}'))
  fixed = {p: _median_abs(v) for p, v in numbers['proxy_corr_by_size'].items()}
  fixed_all = float(np.median(list(fixed.values())))
  out.append(report.check(f'{name}/proxies_correlate_at_fixed_size', round(fixed_all, 3),
                          f'>= {c.fixed_size_corr}', fixed_all >= c.fixed_size_corr,
                          note='median over proxies of median |Spearman| over sizes: ' +
                          ', '.join(f'{p} {v:.2f}' for p, v in fixed.items())))
  change = {p: t['change_corr'] for p, t in numbers['proxy_trend'].items()}
  change_all = float(np.median(list(change.values())))
  out.append(report.check(
      f'{name}/proxies_miss_the_trend', round(change_all, 3),
      f'< {c.trend_ratio} x {fixed_all:.3f}', change_all < c.trend_ratio * fixed_all,
      note='median over proxies of the oriented Spearman correlation of the change across sizes: '
      + ', '.join(f'{p} {v:.2f}' for p, v in change.items())))
  dist = numbers.get('distillation')
  if dist:
    rows = list(dist.values())
    d_mem = float(np.mean([r['mean_mem_distilled'] - r['mean_mem_onehot'] for r in rows]))
    out.append(report.check(f'{name}/distillation_lowers_memorisation', round(d_mem, 4), '< 0',
                            d_mem < 0, note='mean over student sizes of distilled - one-hot'))
    by_class = {}
    for cls in ('decreasing', 'cap', 'increasing', 'flat'):
      values = [r['mem_change_by_class'][cls] for r in rows]
      if not all(np.isnan(values)):  # an empty class has no change to compare
        by_class[cls] = float(np.nanmean(values))
    most = min(by_class, key=by_class.get)
    out.append(report.check(f'{name}/distillation_most_on_increasing', most, 'increasing',
                            most == 'increasing', note='mean change of memorisation per class: '
                            + ', '.join(f'{k} {v:+.3f}' for k, v in by_class.items())))
    d_acc = float(np.mean([r['test_accuracy_distilled'] - r['test_accuracy_onehot']
                           for r in rows]))
    out.append(report.check(f'{name}/distillation_test_accuracy', round(d_acc, 4),
                            f'>= {c.distill_accuracy_margin}',
                            d_acc >= c.distill_accuracy_margin,
                            note='mean over student sizes of distilled - one-hot'))
  return out


def tables(config, numbers) -> list[dict[str, Any]]:
  rows = []
  for name in config.dataset_names:
    nb = numbers[name]
    for j, s in enumerate(nb['per_size']):
      mis = nb['mean_mem_mislabelled']
      rows.append([name, s['size'], round(s['test_accuracy'], 3),
                   round(s['train_accuracy_seen'], 3), round(nb['mean_mem'][j], 3),
                   round(mis[j], 3) if mis else '', round(nb['mean_mem_clean'][j], 3)])
  sweep = report.table('Memorisation against size (K subset models per size)',
                       ['dataset', 'width', 'test acc', 'train acc (seen)', 'mean mem',
                        'mem mislabelled', 'mem clean'], rows)
  rows = []
  for name in config.dataset_names:
    nb = numbers[name]
    for cls in trajectories.CLASSES:
      lo, hi = nb['class_interval_examples'][cls]
      mlo, mhi = nb['class_interval_models'][cls]
      rows.append([name, cls, round(nb['class_fraction'][cls], 3), f'[{lo:.3f}, {hi:.3f}]',
                   f'[{mlo:.3f}, {mhi:.3f}]',
                   round(nb['split_half']['same_class_given_class'][cls], 3)])
  classes = report.table('Trajectory classes (95% bootstrap intervals)',
                         ['dataset', 'class', 'fraction', 'over examples',
                          'over models and examples', 'split-half agreement'], rows)
  rows = []
  for name in config.dataset_names:
    nb = numbers[name]
    for p, corr in nb['proxy_corr_by_size'].items():
      rows.append([name, p, ' '.join(f'{v:+.2f}' for v in corr),
                   round(nb['proxy_trend'][p]['change_corr'], 3)])
  proxy = report.table('Proxies: Spearman with memorisation per size, and of the change across '
                       'sizes (oriented)', ['dataset', 'proxy', 'per size', 'change'], rows)
  out = [sweep, classes, proxy]
  rows = []
  for name in config.dataset_names:
    for size, d in numbers[name].get('distillation', {}).items():
      rows.append([name, size, round(d['mean_mem_onehot'], 3), round(d['mean_mem_distilled'], 3),
                   round(d['mem_change_by_class']['increasing'], 3),
                   round(d['mem_change_mislabelled'], 3)
                   if d['mem_change_mislabelled'] is not None else '',
                   round(d['test_accuracy_onehot'], 3), round(d['test_accuracy_distilled'], 3)])
  if rows:
    out.append(report.table('Distillation (teacher of the same subset)',
                            ['dataset', 'student width', 'mem one-hot', 'mem distilled',
                             'change on increasing', 'change on mislabelled',
                             'test acc one-hot', 'test acc distilled'], rows))
  return out


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  os.makedirs(workdir, exist_ok=True)
  start = time.time()
  numbers, checks, figs = {}, [], []
  with prng_impl(config.prng_impl):
    for name in config.dataset_names:
      result = study.run_dataset(config, name, workdir)
      numbers[name] = result['numbers']
      checks.extend(make_checks(config, name, result['numbers']))
      if jax.process_index() == 0:
        figs.extend(figures.plot_dataset(config, name, result, workdir))
  numbers['seconds'] = round(time.time() - start, 1)
  tc, c = config.trajectory, config.checks
  notes = (f'K = {config.num_models} subset models (f = {config.fraction}, masks shared across '
           f'sizes) and {config.num_full_models} full-data models per size. Trajectory tolerance '
           f'max({tc.floor}, {tc.z} sqrt(2) rms se). Checks fixed before the run: decreasing, '
           f'cap-shaped and increasing each >= {c.min_class_fraction} with the lower end of the '
           f'bootstrap interval over examples > 0; > {c.mislabelled_increasing} of the '
           'mislabelled examples increasing; proxies: median |Spearman| at fixed size >= '
           f'{c.fixed_size_corr}, correlation of the change across sizes < {c.trend_ratio} x '
           'that; distillation lowers mean memorisation, most on the increasing class, test '
           f'accuracy within {-c.distill_accuracy_margin} of one-hot. Arrays (masks, 0/1 '
           'correctness per size) are saved under each dataset for recomputation.')
  return report.make_summary(
      name='memorisation', title='What do larger image classifiers memorise?', claim=CLAIM,
      numbers=numbers, checks=checks, tables=tables(config, numbers), workdir=workdir,
      figures=figs, notes=notes, config=config)

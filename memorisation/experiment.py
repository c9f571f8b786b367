"""The experiment: size sweeps on digits (5% flipped labels) and mnist1d, trajectory classes against
a permutation null, proxies, distillation with its diagnosis; the checks fixed in config.checks,
each decided by its interval (memorisation.evidence); figures.

    python -m memorisation.main --config=configs/memorisation/sweep.py:cpu --workdir=/tmp/mem

`check_config(config)` refuses a config that cannot run or would run wrongly (before any data is
loaded or anything compiled); `run` calls it first.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from common import config_lib
from common import models
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


# ---------------------------------------------------------------------------------------------
# Config checks (before any data is loaded or anything compiled).
# ---------------------------------------------------------------------------------------------
PRNG_IMPLS = ('threefry2x32', 'rbg', 'unsafe_rbg')  # jax's documented implementations


def _fail(field: str, value, expected: str) -> None:
  raise config_lib.ConfigError(f'{field}={value!r}: expected {expected}.')


def _is_number(value) -> bool:
  return (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value))


def _is_whole(value) -> bool:
  return _is_number(value) and float(value).is_integer()


def _whole(config, field: str, minimum: int, prefix: str = '') -> None:
  value = config[field]
  if not _is_whole(value) or value < minimum:
    _fail(prefix + field, value, f'a whole number >= {minimum}')


def _number(config, field: str, lo: float, hi: float, prefix: str = '', *,
            lo_open: bool = False, hi_open: bool = False) -> None:
  """config[field] a finite number in the interval; an infinite bound is not checked."""
  value = config[field]
  if not _is_number(value) or (value <= lo if lo_open else value < lo) or (
      value >= hi if hi_open else value > hi):
    interval = (('(' if lo_open else '[') + f'{lo:g}, {hi:g}'
                + (')' if hi_open or math.isinf(hi) else ']'))
    _fail(prefix + field, value, f'a number in {interval}')


def _size_tuple(size) -> tuple | None:
  """A size as a tuple of whole numbers >= 1 (an int is a 1-tuple); None when it is not one."""
  parts = tuple(size) if isinstance(size, (tuple, list)) else (size,)
  if not parts or not all(_is_whole(p) and p >= 1 for p in parts):
    return None
  return parts


def _check_loop(loop, section: str) -> None:
  """common.config_lib.check_loop, and the fields this experiment reads from the loop (it sets
  total_steps itself from total_epochs)."""
  config_lib.check_loop(loop, section)
  if loop.get('total_steps') is not None:
    _fail(f'{section}.total_steps', loop.total_steps,
          f'None: the sweep counts epochs (set {section}.total_epochs; steps follow from int(f N))')
  _number(loop, 'total_epochs', 0, math.inf, section + '.', lo_open=True)
  _whole(loop, 'seed', 0, section + '.')
  axes = [axis[0] for axis in loop.mesh]
  if 'model' not in axes:
    _fail(f'{section}.mesh', loop.mesh, "a 'model' axis (the ensemble spreads its models over it)")


def _check_dataset(ds, section: str) -> None:
  for field in ('dataset', 'train_split', 'test_split'):
    if not isinstance(ds[field], str) or not ds[field]:
      _fail(f'{section}.{field}', ds[field], 'a non-empty name')
  _number(ds, 'label_noise', 0, 1, section + '.', hi_open=True)
  name = ds.model.get('name')
  if name not in models.MODELS:
    _fail(f'{section}.model.name', name, f'one of {sorted(models.MODELS)}')
  fields = set(models.MODELS[name].__dataclass_fields__) - {'parent', 'name', 'num_outputs'}
  if ds.size_field not in fields:
    _fail(f'{section}.size_field', ds.size_field,
          f'a field of the {name!r} model{config_lib.closest(str(ds.size_field), fields)} '
          f'(one of {sorted(fields)})')
  sizes = [_size_tuple(s) for s in ds.sizes]
  if len(sizes) < 2:
    _fail(f'{section}.sizes', ds.sizes, 'at least two sizes (a trajectory runs across sizes)')
  for j, (raw, size) in enumerate(zip(ds.sizes, sizes)):
    if size is None:
      _fail(f'{section}.sizes[{j}]', raw,
            f'a whole number >= 1 or a non-empty tuple of them (the model\'s {ds.size_field})')
  # The trajectory classes read sizes as smallest -> largest: a sweep out of order would swap
  # "increasing" and "decreasing" without a word.
  for j in range(1, len(sizes)):
    a, b = sizes[j - 1], sizes[j]
    larger = (all(y >= x for x, y in zip(a, b)) and a != b) if len(a) == len(b) else len(b) > len(a)
    if not larger:
      _fail(f'{section}.sizes', ds.sizes,
            f'sizes from smallest to largest (size {j}, {ds.sizes[j]}, is not larger than size '
            f'{j - 1}, {ds.sizes[j - 1]})')
  shape = ds.image_shape
  if not isinstance(shape, (tuple, list)) or not all(_is_whole(d) and d >= 1 for d in shape):
    _fail(f'{section}.image_shape', shape, 'a tuple of whole numbers >= 1 (empty: as stored)')
  _check_loop(ds.loop, section + '.loop')
  _number(ds, 'holdout_epochs', 0, math.inf, section + '.', lo_open=True)
  _number(ds, 'holdout_learning_rate', 0, math.inf, section + '.', lo_open=True)


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises common.config_lib.ConfigError, naming the dotted field, for a config that cannot run
  or would run wrongly; reads the config only (no data, no compile, no files)."""
  names = tuple(config.dataset_names)
  if not names:
    _fail('dataset_names', config.dataset_names, 'at least one dataset')
  for name in names:
    if name not in config.datasets:
      _fail('dataset_names', config.dataset_names,
            f'names of sections of `datasets` ({sorted(config.datasets.keys())}); {name!r} has '
            f'none{config_lib.closest(str(name), config.datasets.keys())}')
  if len(set(names)) != len(names):
    _fail('dataset_names', config.dataset_names, 'each dataset once')
  _whole(config, 'num_models', 2)          # K: in and out of every example needs two subsets
  _whole(config, 'num_full_models', 1)     # R: the loss/confidence/gradient proxies average them
  _number(config, 'fraction', 0, 1, lo_open=True, hi_open=True)
  _whole(config, 'mask_seed', 0)
  _whole(config, 'chunk_target', 0)
  if config.prng_impl and config.prng_impl not in PRNG_IMPLS:
    _fail('prng_impl', config.prng_impl, f"'' (jax's default) or one of {PRNG_IMPLS}")
  for name in names:
    _check_dataset(config.datasets[name], f'datasets.{name}')

  d = config.distill
  for name in d.datasets:
    if name not in names:
      _fail('distill.datasets', d.datasets, f'datasets of the run (dataset_names {names}); '
            f'{name!r} is not one')
  # alpha weighs the one-hot term: at 1 (or above) no soft label is left and the "students"
  # would be one-hot models reported as distilled ones.
  if not _is_number(d.alpha) or not 0 <= d.alpha <= 1 or (d.datasets and d.alpha == 1):
    _fail('distill.alpha', d.alpha, 'a number in [0, 1): the weight of the one-hot term '
          '(0: soft labels only; at 1 the students would be one-hot models)')
  _number(d, 'tau', 0, math.inf, 'distill.', lo_open=True)
  if d.datasets and not d.student_sizes:
    _fail('distill.student_sizes', d.student_sizes,
          f'at least one index into the sizes when distill.datasets={d.datasets!r} (or set '
          'distill.datasets=() to skip distillation)')
  for name in d.datasets:
    sizes = config.datasets[name].sizes
    valid = f'an index into datasets.{name}.sizes (-{len(sizes)} to {len(sizes) - 1}: {sizes})'
    for field, values in (('teacher_size', (d.teacher_size,)), ('student_sizes', d.student_sizes)):
      for j in values:
        if not _is_whole(j) or not -len(sizes) <= j < len(sizes):
          _fail(f'distill.{field}', getattr(d, field), valid)
    positions = [j % len(sizes) for j in d.student_sizes]
    if len(set(positions)) != len(positions):
      _fail('distill.student_sizes', d.student_sizes, 'each size once')

  t = config.trajectory
  _number(t, 'z', 0, math.inf, 'trajectory.')
  _number(t, 'floor', 0, math.inf, 'trajectory.')
  _whole(t, 'bootstrap', 1, 'trajectory.')
  _whole(t, 'model_bootstrap', 2, 'trajectory.')
  _whole(t, 'null_draws', 2, 'trajectory.')
  _whole(t, 'proxy_bootstrap', 2, 'trajectory.')

  c = config.checks
  _number(c, 'class_null_quantile', 0, 1, 'checks.', lo_open=True, hi_open=True)
  _number(c, 'decreasing_minus_increasing', -1, 1, 'checks.')
  _number(c, 'distill_mem_change', -1, 1, 'checks.')
  _number(c, 'distill_most_on_increasing', -2, 2, 'checks.')
  _number(c, 'mislabelled_increasing', 0, 1, 'checks.')
  _number(c, 'fixed_size_corr', 0, 1, 'checks.')
  _number(c, 'trend_ratio', 0, math.inf, 'checks.')
  _number(c, 'distill_accuracy_margin', -1, 1, 'checks.')


def _fmt_interval(interval) -> str:
  return f'[{interval[0]:.3f}, {interval[1]:.3f}]' if interval else ''


def make_checks(config, name: str, numbers: dict[str, Any]) -> list[dict[str, Any]]:
  """The checks stated in config.checks before the run, each decided by its interval."""
  c = config.checks
  q = round(100 * c.class_null_quantile)
  out = []
  for cls in ('decreasing', 'cap', 'increasing'):
    null = numbers['null'][cls]
    agree = numbers['split_half']['same_class_given_class'][cls]
    out.append(report.check(
        f'{name}/{cls}_fraction_above_null', numbers['class_fraction'][cls], compare='>',
        threshold=null['p95'], interval=numbers['class_interval_models'][cls], evidence='null',
        note=f'threshold: the {q}th percentile of the fraction over {numbers["null_draws"]} '
        f'draws of the permutation null (masks shuffled per example, same K; null mean '
        f'{null["mean"]:.3f}); interval: 95% over models and examples, recentred; split-half '
        f'agreement {agree:.2f}'))
  out.append(report.check(
      f'{name}/decreasing_exceeds_increasing', numbers['decreasing_minus_increasing'],
      compare='>', threshold=c.decreasing_minus_increasing,
      interval=numbers['decreasing_minus_increasing_interval'],
      note='"most examples memorise less under larger models": fraction decreasing minus '
      'fraction increasing (95% over models and examples, recentred)'))
  mis = numbers.get('mislabelled_class_fraction')
  if mis:
    null = numbers['mislabelled_null_increasing']
    out.append(report.check(
        f'{name}/mislabelled_in_increasing', mis['increasing'], compare='>',
        threshold=c.mislabelled_increasing, interval=numbers['mislabelled_increasing_interval'],
        note=f'{numbers["num_mislabelled"]} flipped labels; 95% over models and examples, '
        f'recentred; the permutation null puts {null["mean"]:.3f} of them there (p{q} '
        f'{null["p95"]:.3f})'))
  out.append(report.check(
      f'{name}/proxies_correlate_at_fixed_size', numbers['fixed_size_corr'], compare='>=',
      threshold=c.fixed_size_corr, interval=numbers['fixed_size_corr_interval'],
      note='median over proxies of the median |Spearman| over sizes (95% over examples): '
      + ', '.join(f'{p} {np.median(np.abs(v)):.2f}'
                  for p, v in numbers['proxy_corr_by_size'].items())))
  out.append(report.check(
      f'{name}/proxies_miss_the_trend', numbers['trend_excess'], compare='<', threshold=0.0,
      interval=numbers['trend_excess_interval'],
      note=f'median over proxies of the oriented Spearman of the change across sizes minus '
      f'{c.trend_ratio} x the fixed-size value (95% over examples); changes: '
      + ', '.join(f'{p} {t["change_corr"]:.2f}' for p, t in numbers['proxy_trend'].items())))
  dist = numbers.get('distillation')
  if dist:
    ev = dist['evidence']
    row = lambda key: (ev[key]['value'], ev[key]['interval'])
    value, interval = row('distilled minus one-hot mem')
    out.append(report.check(
        f'{name}/distillation_lowers_memorisation', value, compare='<',
        threshold=c.distill_mem_change, interval=interval,
        note='mean over student sizes of distilled (teacher of the same subset) minus one-hot '
        'mean memorisation; 95% over models (paired) and examples'))
    value, interval = row('change on increasing minus the lowest other')
    base = ('one-hot models of another seed (independent of the sweep that picked the classes)'
            if 'control' in dist['arms'] else 'the sweep\'s one-hot models')
    out.append(report.check(
        f'{name}/distillation_most_on_increasing', value, compare='<',
        threshold=c.distill_most_on_increasing, interval=interval,
        note=f'distilled minus {base}, per class of the one-hot sweep: change on increasing minus '
        'the lowest change among decreasing, cap, flat; 95% over models (paired) and examples; '
        'per class: ' + ', '.join(f'{k} {ev[f"change on {k}"]["value"]:+.3f}'
                                  for k in ('decreasing', 'cap', 'increasing', 'flat')
                                  if f'change on {k}' in ev)))
    value, interval = row('distilled minus one-hot test acc')
    out.append(report.check(
        f'{name}/distillation_test_accuracy', value, compare='>=',
        threshold=c.distill_accuracy_margin, interval=interval,
        note='mean over student sizes of distilled minus one-hot test accuracy; 95% over '
        'models (paired) and test examples'))
  return out


def _cell(ev, key) -> str:
  if key not in ev or not np.isfinite(ev[key]['value']):
    return ''     # not measured, or no example to measure it on (no flipped label)
  value, interval = ev[key]['value'], ev[key]['interval']
  text = f'{value:.0f}' if key.endswith('count') else f'{value:.3f}'
  if interval:
    text += (f' [{interval[0]:.0f}, {interval[1]:.0f}]' if key.endswith('count')
             else f' [{interval[0]:.3f}, {interval[1]:.3f}]')
  return text


DIAGNOSIS_COLUMNS = ['dataset', 'width', 'quantity', 'one-hot', 'one-hot, other seed',
                     'distilled: teacher of subset k', 'distilled: teacher of all data']


def diagnosis_table(config, numbers) -> dict[str, Any] | None:
  """'Diagnosis: ...': where the distilled students' memorisation goes (issue 31), each cell a
  value [95% interval] over models (paired across arms) and examples."""
  rows = []
  for name in config.dataset_names:
    dist = numbers[name].get('distillation')
    if not dist:
      continue
    ev, teacher = dist['evidence'], dist['teacher_size']
    cell = lambda key: _cell(ev, key)
    rows.append([name, teacher, 'the teacher\'s own mem on mislabelled examples', '', '',
                 cell('teacher mem, mislabelled'), ''])
    rows.append([name, teacher, 'the teacher\'s own mem on clean examples', '', '',
                 cell('teacher mem, clean'), ''])
    for label, key in (('teacher p(flipped label), mislabelled examples it saw',
                        'teacher p(flipped label), seen'),
                       (f'same at tau = {config.distill.tau:g} (the students\' target)',
                        'teacher p(flipped label) at tau, seen'),
                       ('teacher argmax = flipped label, mislabelled examples it saw',
                        'teacher argmax = flipped label, seen')):
      rows.append([name, teacher, label, '', '', cell(f'subset {key}'), cell(f'full {key}')])
    for size in dist['student_sizes']:
      for label, key in (('mean mem', 'mem'), ('mem on mislabelled', 'mem, mislabelled'),
                         ('  mislabelled: accuracy (flipped label) of the models that saw it',
                          'seen acc, mislabelled'),
                         ('  mislabelled: accuracy (flipped label) of those that did not',
                          'unseen acc, mislabelled'),
                         ('clean: accuracy of the models that saw it', 'seen acc, clean'),
                         ('clean: accuracy of those that did not (C-score)', 'unseen acc, clean'),
                         ('test accuracy', 'test acc')):
        rows.append([name, size, label, cell(f'{size}: one-hot {key}'),
                     cell(f'{size}: control {key}'), cell(f'{size}: subset {key}'),
                     cell(f'{size}: full {key}')])
      for label, key in (('examples the students memorise (mem >= 0.5)', 'memorised count'),
                         ('  of them mislabelled', 'memorised, mislabelled'),
                         ('  the teacher\'s own mem on them', 'memorised, teacher mem'),
                         ('  the one-hot students\' mem on them', 'memorised, one-hot mem')):
        rows.append([name, size, label, '', '', cell(f'{size}: subset {key}'),
                     cell(f'{size}: full {key}')])
    for cls in ('decreasing', 'cap', 'increasing', 'flat'):
      rows.append([name, 'mean', f'distilled (subset k) minus the one-hot column, class {cls}',
                   cell(f'change on {cls} against the sweep'), cell(f'change on {cls}'), '', ''])
    for cls in ('decreasing', 'cap', 'increasing', 'flat'):
      rows.append([name, 'mean', f'regression to the mean: other seed minus one-hot, class {cls}',
                   '', cell(f'control minus sweep on {cls}'), '', ''])
  rows = [r for r in rows if any(r[3:])]
  if not rows:
    return None
  return report.table(
      'Diagnosis: where the distilled students\' memorisation goes', DIAGNOSIS_COLUMNS, rows,
      note='Each cell: value [95% interval] over the K models (one draw for every arm: student k, '
      'one-hot model k and teacher k share subset k) and the examples. one-hot: the sweep\'s '
      'models (their scores define the trajectory classes); one-hot, other seed: the same '
      'subsets, another initialisation (an independent re-estimate); teacher of subset k: the '
      'card\'s protocol (teacher + student is the algorithm); teacher of all data: a full-data '
      'model at the teacher\'s size. "mean" rows average over the student widths.')


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
      rows.append([name, cls, round(nb['class_fraction'][cls], 3),
                   _fmt_interval(nb['class_interval_models'][cls]),
                   _fmt_interval(nb['class_interval_examples'][cls]),
                   round(nb['null'][cls]['mean'], 3), round(nb['null'][cls]['p95'], 3),
                   round(nb['split_half']['same_class_given_class'][cls], 3)])
  classes = report.table(
      'Trajectory classes against the permutation null (95% intervals; the null: masks shuffled '
      'per example at the same K)',
      ['dataset', 'class', 'fraction', 'over models and examples (deciding)',
       'over examples only', 'null mean', 'null p95', 'split-half agreement'], rows)
  rows = []
  for name in config.dataset_names:
    nb = numbers[name]
    for p, corr in nb['proxy_corr_by_size'].items():
      rows.append([name, p, ' '.join(f'{v:+.2f}' for v in corr),
                   round(nb['proxy_trend'][p]['change_corr'], 3)])
  proxy = report.table('Proxies: Spearman with memorisation per size, and of the change across '
                       'sizes (oriented)', ['dataset', 'proxy', 'per size', 'change'], rows)
  out = [sweep, classes, proxy]
  diagnosis = diagnosis_table(config, numbers)
  if diagnosis:
    out.append(diagnosis)
  return out


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  check_config(config)
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
           f'max({tc.floor}, {tc.z} sqrt(2) rms se). Checks fixed before the run (config.checks), '
           'each decided by its 95% interval: decreasing, cap-shaped and increasing fractions '
           '(models and examples resampled, recentred) above the '
           f'{round(100 * c.class_null_quantile)}th percentile of a permutation null '
           f'({tc.null_draws} draws: each example\'s mask column shuffled across the models, '
           'same K, same correctness); decreasing above increasing; > '
           f'{c.mislabelled_increasing} of the mislabelled examples increasing; proxies: median '
           f'|Spearman| at fixed size >= {c.fixed_size_corr}, correlation of the change across '
           f'sizes minus {c.trend_ratio} x that < 0 (examples resampled); distillation lowers '
           'mean memorisation, most on the increasing class, test accuracy within '
           f'{-c.distill_accuracy_margin} of one-hot (models, paired, and examples resampled). '
           'Arrays (masks, 0/1 correctness per size) are saved under each dataset for '
           'recomputation.')
  return report.make_summary(
      name='memorisation', title='What do larger image classifiers memorise?', claim=CLAIM,
      numbers=numbers, checks=checks, tables=tables(config, numbers), workdir=workdir,
      figures=figs, notes=notes, config=config)

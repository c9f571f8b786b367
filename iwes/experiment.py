"""The experiment: every method x seed selecting on mnist1d and digits at equal label budgets,
accuracy against labels with 95% intervals over seeds, IWeS's acceptance rates and weights, the
checks fixed in the config, figures.

    python -m iwes.main --config=configs/iwes/mnist1d.py:cpu --workdir=/tmp/iwes

Each dataset's selection state is saved under workdir/<dataset>/ after every round, so a rerun
(or a stopped run) resumes at its round.
"""

from __future__ import annotations

import os
import time
from typing import Any

from absl import logging
import jax
import ml_collections
import numpy as np
from scipy import stats

from common import config_lib
from common import models
from common import report
from common.data import loader
from iwes import methods as methods_lib
from iwes import selection

CLAIM = ('In batch subset selection, sampling examples with a probability from the disagreement '
         'of two models trained on the previous batches and weighting them by the inverse '
         'probability (IWeS) beats uniform sampling and the other subset selection methods at '
         'equal label budgets; its entropy form (IWeS-ent) is competitive in active learning; '
         'the sampling rate (acceptance rate) falls as the models improve.')
TOP_K = ('margin', 'entropy', 'least_confidence')
ACTIVE_BASELINES = ('margin', 'entropy', 'least_confidence', 'kcenter', 'badge',
                    'cluster_margin')


# ---------------------------------------------------------------------------------------------
# The config, checked alone (no data, no compile, no files).
# ---------------------------------------------------------------------------------------------
def _whole(field: str, value, minimum: int) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise config_lib.ConfigError(f'{field}={value!r}: expected a whole number >= {minimum}.')
  return int(value)


def _number(field: str, value) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
    raise config_lib.ConfigError(f'{field}={value!r}: expected a finite number.')
  return float(value)


def _check_dataset(config, name: str) -> int:
  """datasets.<name>: its model, sizes and loop; the number of budgets it reports."""
  if name not in config.datasets:
    raise config_lib.ConfigError(f'dataset_names: {name!r} is not in datasets '
                                 f'({sorted(config.datasets)}).')
  ds, prefix = config.datasets[name], f'datasets.{name}'
  seed_size = _whole(f'{prefix}.seed_size', ds.seed_size, 1)
  batch_size = _whole(f'{prefix}.batch_size', ds.batch_size, 1)
  budget = _whole(f'{prefix}.budget', ds.budget, 1)
  if seed_size > budget:
    raise config_lib.ConfigError(f'{prefix}.seed_size={seed_size} is larger than {prefix}.budget='
                                 f'{budget}.')
  if (budget - seed_size) % batch_size:
    raise config_lib.ConfigError(
        f'{prefix}.budget - {prefix}.seed_size = {budget - seed_size} is not a whole number of '
        f'batches of {prefix}.batch_size={batch_size}.')
  config_lib.check_loop(ds.loop, f'{prefix}.loop')
  if ds.loop.batch_size > seed_size:
    raise config_lib.ConfigError(
        f'{prefix}.loop.batch_size={ds.loop.batch_size} is larger than {prefix}.seed_size='
        f'{seed_size}: the first round trains on the seed set alone.')
  try:
    models.build(ds.model, loader.NUM_CLASSES.get(ds.dataset, 10))
  except config_lib.ConfigError as e:
    raise config_lib.ConfigError(f'{prefix}.model: {e}') from e
  return (budget - seed_size) // batch_size + 1


def check_config(config: ml_collections.ConfigDict) -> None:
  """Everything that can be wrong with the config, read from the config alone (no data, no
  compile, no files): raises ConfigError naming the dotted field. Called first by `run`, and by
  common.app and reproduce before anything runs."""
  if not config.dataset_names:
    raise config_lib.ConfigError('dataset_names=(): name at least one of '
                                 f'{sorted(config.datasets)}.')
  budgets = [_check_dataset(config, name) for name in config.dataset_names]
  for name, method in config.methods.items():
    try:
      methods_lib.Method.from_config(name, method)
    except methods_lib.checks.IwesInputError as e:
      raise config_lib.ConfigError(f'methods.{name}: {e}') from e
  if not config.method_names:
    raise config_lib.ConfigError('method_names=(): name at least one of config.methods.')
  for field in ('method_names', 'primary', 'primary_noweight', 'active'):
    names = config[field] if field == 'method_names' else (config[field],)
    unknown = [m for m in names if m not in config.methods]
    if unknown:
      raise config_lib.ConfigError(f'{field}: {unknown} not in methods ({sorted(config.methods)}).')
  _whole('seeds', config.seeds, 1)
  _whole('chunk_size', config.chunk_size, 0)
  if not isinstance(config.keep_round_checkpoints, bool):
    raise config_lib.ConfigError(f'keep_round_checkpoints={config.keep_round_checkpoints!r}: '
                                 'expected True or False.')
  points = _whole('checks.final_points', config.checks.final_points, 1)
  if points > min(budgets):
    raise config_lib.ConfigError(f'checks.final_points={points}: more than the {min(budgets)} '
                                 'budgets a dataset reports.')
  for field in ('beats_margin', 'competitive_margin', 'acceptance_drop', 'weights_gain'):
    _number(f'checks.{field}', config.checks[field])


def make_runs(config) -> list[selection.Run]:
  unknown = [m for m in config.method_names if m not in config.methods]
  if unknown:
    raise methods_lib.checks.IwesInputError(
        f'method_names {unknown} are not in config.methods ({sorted(config.methods)}).')
  return [selection.Run(methods_lib.Method.from_config(m, config.methods[m]), seed)
          for m in config.method_names for seed in range(config.seeds)]


def _interval(values: np.ndarray) -> np.ndarray:
  """Half-width of the 95% t-interval of the mean over axis 0 (0 for one seed)."""
  n = len(values)
  if n < 2:
    return np.zeros(values.shape[1:])
  return stats.t.ppf(0.975, n - 1) * values.std(0, ddof=1) / np.sqrt(n)


def aggregate(config, result: selection.SelectionResult) -> dict[str, Any]:
  """Per method: accuracy at each budget (mean, 95% interval, per seed) and IWeS's logs."""
  by_method: dict[str, list[int]] = {}
  for j, run in enumerate(result.runs):
    by_method.setdefault(run.method.name, []).append(j)
  out = {}
  for name, js in by_method.items():
    labels = result.accuracy_curve(js[0])[0]
    acc = np.stack([result.accuracy_curve(j)[1] for j in js])        # (seeds, budgets)
    row = {'labels': labels.tolist(), 'accuracy': np.round(acc.mean(0), 4).tolist(),
           'ci95': np.round(_interval(acc), 4).tolist(),
           'per_seed': np.round(acc, 4).tolist()}
    logs = [result.states[j].logs for j in js]
    if 'acceptance_rate' in logs[0][0]:
      sel = lambda key: np.array([[r[key] for r in log if key in r] for log in logs])
      row['acceptance_rate'] = np.round(sel('acceptance_rate').mean(0), 4).tolist()
      row['p_mean_available'] = np.round(sel('p_mean_available').mean(0), 4).tolist()
      for key in ('weight_mean', 'weight_p50', 'weight_p90', 'weight_max', 'capped_fraction'):
        row[key] = np.round(sel(key).mean(0), 3).tolist()
      weights = np.concatenate([result.states[j].weights[config_seed_size(result, j):]
                                for j in js])
      row['weights_of_selected'] = np.round(weights, 3)
    out[name] = row
  return out


def config_seed_size(result, j) -> int:
  """Examples of run j selected before the first round (the uniform seed set)."""
  logs = result.states[j].logs
  return logs[0]['labels']


def _final(rows, name, points) -> float:
  return float(np.mean(rows[name]['accuracy'][-points:]))


def make_checks(config, rows, dataset) -> list[dict[str, Any]]:
  """The checks fixed in the config, as report.check entries (the weights one informational)."""
  c, points = config.checks, config.checks.final_points
  out = []
  methods = set(rows)
  prim = config.primary
  if prim in methods and 'uniform' in methods:
    gap = _final(rows, prim, points) - _final(rows, 'uniform', points)
    out.append(report.check(f'{dataset}/{prim}_minus_uniform', round(gap, 4),
                            f'> {c.beats_margin}', gap > c.beats_margin))
  topk = [m for m in TOP_K if m in methods]
  if prim in methods and topk:
    best = max(topk, key=lambda m: _final(rows, m, points))
    gap = _final(rows, prim, points) - _final(rows, best, points)
    out.append(report.check(f'{dataset}/{prim}_minus_best_top_k', round(gap, 4),
                            f'> {c.beats_margin}', gap > c.beats_margin, note=f'best: {best}'))
  rates = rows.get(prim, {}).get('acceptance_rate', [])
  if len(rates) > 1:
    drop = rates[-1] - rates[0]
    out.append(report.check(f'{dataset}/{prim}_acceptance_last_minus_first', round(drop, 4),
                            f'< {c.acceptance_drop}', drop < c.acceptance_drop,
                            note=f'rates per round {rates}'))
  act = [m for m in ACTIVE_BASELINES if m in methods]
  if config.active in methods and act:
    best = max(act, key=lambda m: _final(rows, m, points))
    gap = _final(rows, config.active, points) - _final(rows, best, points)
    out.append(report.check(f'{dataset}/{config.active}_minus_best_active_baseline',
                            round(gap, 4), f'>= {c.competitive_margin}',
                            gap >= c.competitive_margin, note=f'best: {best}'))
  if prim in methods and config.primary_noweight in methods:
    gap = _final(rows, prim, points) - _final(rows, config.primary_noweight, points)
    out.append(report.check(f'{dataset}/{prim}_minus_{config.primary_noweight}', round(gap, 4),
                            f'> {c.weights_gain}', gap > c.weights_gain, informational=True,
                            note='do the importance weights help? (not part of the claim)'))
  return out


def results_table(config, numbers) -> dict[str, Any]:
  rows = []
  for name in config.dataset_names:
    for method, row in numbers[name]['methods'].items():
      rates = row.get('acceptance_rate')
      rows.append([name, method, row['labels'][-1],
                   f"{row['accuracy'][-1]:.3f} +- {row['ci95'][-1]:.3f}",
                   numbers[name]['final_accuracy_mean_last_budgets'][method],
                   f'{rates[0]:.2f} -> {rates[-1]:.2f}' if rates else ''])
  return report.table(
      f'Test accuracy at the final budget (mean +- 95% interval over {config.seeds} seeds)',
      ['dataset', 'method', 'labels', 'accuracy', f'mean of last {config.checks.final_points} '
       'budgets', 'acceptance rate (first -> last round)'], rows)


def plot(dataset, rows, path) -> str:
  plt = report.pyplot()
  fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
  ax = axes[0]
  for i, (name, row) in enumerate(sorted(rows.items())):
    style = '-' if name.startswith('iwes') else '--'
    mean, ci = np.array(row['accuracy']), np.array(row['ci95'])
    ax.errorbar(np.array(row['labels']) + 3 * (i - len(rows) / 2), mean, yerr=ci, fmt=style,
                marker='o', ms=3, capsize=2, lw=2 if name == 'uniform' else 1, label=name)
  ax.set_xlabel('labels')
  ax.set_ylabel('test accuracy (mean of f and g; 95% interval over seeds)')
  ax.set_title(f'{dataset}: accuracy against labels')
  ax.legend(fontsize=6, ncol=2)
  ax = axes[1]
  for name, row in sorted(rows.items()):
    if 'acceptance_rate' in row:
      ax.plot(np.arange(1, len(row['acceptance_rate']) + 1), row['acceptance_rate'], 'o-',
              label=name)
  ax.set_xlabel('round')
  ax.set_ylabel('acceptance rate (kept / examined)')
  ax.set_title('IWeS: sampling rate per round')
  ax.legend(fontsize=7)
  ax = axes[2]
  for name, row in sorted(rows.items()):
    if 'weights_of_selected' in row and name.startswith('iwes_dis_w'):
      ax.hist(np.log10(row['weights_of_selected']), bins=30, histtype='step', label=name)
  ax.set_xlabel('log10 weight of the selected examples (after the cap)')
  ax.set_ylabel('count (all rounds and seeds)')
  ax.set_title('IWeS-dis: weight distribution')
  ax.legend(fontsize=7)
  return report.save_figure(fig, path, dpi=80)


def run_dataset(config, name: str, workdir: str) -> dict[str, Any]:
  ds = config.datasets[name]
  data = loader.load_splits(ds, ('train', 'test'), data_dir=config.get('data_dir'))
  pool, test = data['train'], data['test']
  start = time.time()
  result = selection.run_selection(
      ds.loop, os.path.join(workdir, name), model_config=ds.model, pool=pool, test=test,
      runs=make_runs(config), seed_size=ds.seed_size, batch_size=ds.batch_size,
      budget=ds.budget, num_classes=loader.num_classes(ds.dataset, pool),
      chunk_size=config.chunk_size, keep_round_checkpoints=config.keep_round_checkpoints)
  rows = aggregate(config, result)
  logging.info('%s: accuracy at %s labels: %s', name, rows[config.method_names[0]]['labels'],
               {m: r['accuracy'] for m, r in rows.items()})
  return {'rows': rows, 'seconds': time.time() - start, 'pool': len(pool['label']),
          'test': len(test['label'])}


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  check_config(config)
  os.makedirs(workdir, exist_ok=True)
  numbers, checks, figures = {}, [], []
  start = time.time()
  for name in config.dataset_names:
    out = run_dataset(config, name, workdir)
    rows = out['rows']
    checks.extend(make_checks(config, rows, name))
    final = {m: round(_final(rows, m, config.checks.final_points), 4) for m in rows}
    numbers[name] = {
        'pool': out['pool'], 'test': out['test'], 'seconds': round(out['seconds'], 1),
        'final_accuracy_mean_last_budgets': final,
        'methods': {m: {k: v for k, v in r.items() if k != 'weights_of_selected'}
                    for m, r in rows.items()}}
    if jax.process_index() == 0:
      figures.append(plot(name, rows, os.path.join(workdir, f'accuracy_{name}.png')))
  numbers['seconds'] = round(time.time() - start, 1)
  c = config.checks
  notes = (f'{config.seeds} seed(s); accuracy is the mean of the round\'s two models on the test '
           f'split, "final" the mean over the last {c.final_points} budgets. Checks fixed in the '
           f'config before the run, "IWeS" being {config.primary}: it beats uniform and the best '
           f'top-k uncertainty baseline by more than {c.beats_margin}; {config.active} is within '
           f'{-c.competitive_margin} of the best active-learning baseline; the acceptance rate '
           'is lower in the last round than in the first. Informational: '
           f'{config.primary} minus {config.primary_noweight} (do the weights help?).')
  return report.make_summary(
      name='iwes', title='IWeS: importance-weighted subset selection', claim=CLAIM,
      numbers=numbers, checks=checks, tables=[results_table(config, numbers)], workdir=workdir,
      figures=figures, notes=notes, config=config)

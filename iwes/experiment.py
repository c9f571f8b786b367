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
  for split in ('train_split', 'valid_split', 'test_split'):
    if not isinstance(ds.get(split), str) or not ds.get(split):
      raise config_lib.ConfigError(
          f'{prefix}.{split}={ds.get(split)!r}: expected a split name such as "train[:-1000]" '
          '(valid_split: the examples held out of the pool that choose the weight cap).')
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
  if not config.iwes_candidates:
    raise config_lib.ConfigError('iwes_candidates=(): name at least one IWeS-dis method (the '
                                 'cap is chosen among them on validation).')
  for field in ('method_names', 'iwes_candidates', 'primary_noweight', 'active'):
    names = config[field] if field in ('method_names', 'iwes_candidates') else (config[field],)
    unknown = [m for m in names if m not in config.methods]
    if unknown:
      raise config_lib.ConfigError(f'{field}: {unknown} not in methods ({sorted(config.methods)}).')
  if not set(config.iwes_candidates) & set(config.method_names):
    raise config_lib.ConfigError(f'iwes_candidates={tuple(config.iwes_candidates)}: none is in '
                                 'method_names; run at least one (the checks compare it).')
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


# Per-round logs of IWeS runs kept per seed (the diagnosis reads intervals off them).
LOG_KEYS = ('acceptance_rate', 'p_mean_available', 'agreement', 'capped_fraction',
            'batch_ess_fraction', 'set_ess_fraction', 'loss_variance_factor',
            'loss_weighted_ratio', 'weight_mean',
            'weight_p50', 'weight_p90', 'weight_max')


def aggregate(config, result: selection.SelectionResult) -> dict[str, Any]:
  """Per method: test (and validation) accuracy at each budget (mean, 95% interval, per seed),
  the sets' effective sample size, and IWeS's per-round logs per seed."""
  del config
  by_method: dict[str, list[int]] = {}
  for j, run in enumerate(result.runs):
    by_method.setdefault(run.method.name, []).append(j)
  out = {}
  for name, js in by_method.items():
    labels = result.accuracy_curve(js[0])[0]
    logs = [result.states[j].logs for j in js]
    sel = lambda key, logs=logs: np.array([[r[key] for r in log if key in r] for log in logs])
    acc = sel('accuracy')                                              # (seeds, budgets)
    row = {'labels': labels.tolist(), 'accuracy': np.round(acc.mean(0), 4).tolist(),
           'ci95': np.round(_interval(acc), 4).tolist(),
           'per_seed': np.round(acc, 4).tolist(),
           'ess_fraction_per_seed': np.round(sel('ess_fraction'), 4).tolist()}
    if 'accuracy_valid' in logs[0][0]:
      row['valid_per_seed'] = np.round(sel('accuracy_valid'), 4).tolist()
    if 'acceptance_rate' in logs[0][0]:
      row['acceptance_rate'] = np.round(sel('acceptance_rate').mean(0), 4).tolist()
      row['rounds'] = {key: np.round(sel(key), 4).tolist() for key in LOG_KEYS
                       if key in logs[0][0]}
      weights = np.concatenate([result.states[j].weights[logs_i[0]['labels']:]
                                for j, logs_i in zip(js, logs)])
      row['weights_of_selected'] = np.round(weights, 3)
    out[name] = row
  return out


def _per_seed(rows, name, points, key='per_seed') -> np.ndarray:
  """(seeds,) accuracy of a method, each seed's mean over the last `points` budgets."""
  return np.asarray(rows[name][key])[:, -points:].mean(1)


def _final(rows, name, points) -> float:
  return float(_per_seed(rows, name, points).mean())


def best_on_validation(rows, names, points) -> str | None:
  """The method among `names` with the best mean validation accuracy (last `points` budgets)."""
  names = [m for m in names if m in rows]
  if not names:
    return None
  key = 'valid_per_seed' if all('valid_per_seed' in rows[m] for m in names) else 'per_seed'
  return max(names, key=lambda m: float(_per_seed(rows, m, points, key).mean()))


def _paired(rows, a, b, points) -> dict[str, Any]:
  """a minus b per seed (the runs of one seed share its seed set), mean and 95% t-interval."""
  return report.mean_interval(_per_seed(rows, a, points) - _per_seed(rows, b, points))


def _gap_check(name, gap, compare, threshold, **kw) -> dict[str, Any]:
  return report.check(name, round(gap['mean'], 4), compare=compare, threshold=threshold,
                      interval=(gap['low'], gap['high']), **kw)


def make_checks(config, rows, dataset) -> list[dict[str, Any]]:
  """The checks fixed in the config: per-seed paired differences with intervals over seeds."""
  c, points = config.checks, config.checks.final_points
  out = []
  prim = best_on_validation(rows, config.iwes_candidates, points)
  if prim is None:
    return out
  chosen = f'IWeS = {prim}, the cap chosen on validation'
  if 'uniform' in rows:
    out.append(_gap_check(f'{dataset}/iwes_minus_uniform', _paired(rows, prim, 'uniform', points),
                          '>', c.beats_margin, note=chosen))
  best = best_on_validation(rows, TOP_K, points)
  if best:
    out.append(_gap_check(f'{dataset}/iwes_minus_best_top_k', _paired(rows, prim, best, points),
                          '>', c.beats_margin, note=f'{chosen}; best top-k on validation: {best}'))
  rates = np.asarray(rows[prim].get('rounds', {}).get('acceptance_rate', []))
  if rates.ndim == 2 and rates.shape[1] > 1:
    drop = report.mean_interval(rates[:, -1] - rates[:, 0])
    out.append(_gap_check(f'{dataset}/iwes_acceptance_last_minus_first_round', drop, '<',
                          c.acceptance_drop,
                          note=f'{chosen}; mean rate per round {rows[prim]["acceptance_rate"]}'))
  best = best_on_validation(rows, ACTIVE_BASELINES, points)
  if config.active in rows and best:
    out.append(_gap_check(f'{dataset}/{config.active}_minus_best_active_baseline',
                          _paired(rows, config.active, best, points), '>',
                          c.competitive_margin, note=f'best on validation: {best}'))
  if config.primary_noweight in rows:
    out.append(_gap_check(f'{dataset}/iwes_minus_{config.primary_noweight}',
                          _paired(rows, prim, config.primary_noweight, points), '>',
                          c.weights_gain, informational=True,
                          note=f'{chosen}; do the importance weights help? (the means, not the '
                               'claim: see the diagnosis table)'))
  return out


def _cell(values, digits=3) -> str:
  """'mean [low, high]' of per-seed values (95% t-interval; the mean alone for one seed)."""
  values = np.asarray(values, np.float64)
  if len(values) < 2:
    return f'{values.mean():.{digits}f}'
  m = report.mean_interval(values)
  return f"{m['mean']:.{digits}f} [{m['low']:.{digits}f}, {m['high']:.{digits}f}]"


def caps_table(config, numbers) -> dict[str, Any]:
  """Every IWeS-dis cap: validation and test accuracy, and minus the no-weight sampling."""
  rows, points = [], config.checks.final_points
  for name in config.dataset_names:
    r, chosen = numbers[name]['methods'], numbers[name]['iwes']
    for m in list(config.iwes_candidates) + [config.primary_noweight]:
      if m not in r:
        continue
      minus = (_cell(_per_seed(r, m, points) - _per_seed(r, config.primary_noweight, points))
               if config.primary_noweight in r and m != config.primary_noweight else '')
      rows.append([name, m, config.methods[m].get('w_max', '') if m != config.primary_noweight
                   else 'no weights',
                   _cell(_per_seed(r, m, points, 'valid_per_seed')) if 'valid_per_seed' in r[m]
                   else '', _cell(_per_seed(r, m, points)), minus,
                   'yes' if m == chosen else ''])
  return report.table(
      f'Diagnosis: IWeS-dis at every weight cap (accuracy over the last {points} budgets, mean '
      f'[95% interval] over {config.seeds} seeds; the cap chosen on validation is "IWeS")',
      ['dataset', 'method', 'cap', 'validation accuracy', 'test accuracy',
       'minus no weights (test)', 'chosen'], rows)


DIAGNOSIS_COLUMNS = ['dataset', 'method', 'round', 'labels', 'f-g agreement', 'mean p',
                     'acceptance rate', 'capped share', 'batch ESS / k', 'set ESS / n',
                     'loss variance factor', 'weighted / plain loss',
                     'minus no weights (test acc.)']


def diagnosis_table(config, numbers) -> dict[str, Any]:
  """'Diagnosis: ...' (issue 31): per round, what the importance weights do, read off intervals
  over seeds, for the chosen cap and the largest one. Round r: the set S_r its models trained on
  (set ESS / n, the loss variance factor of its weighted loss, test accuracy minus the same
  sampling without weights), and the batch picked after it (f and g agreeing on the pool's
  argmax, the mean sampling probability, the acceptance rate, the share of kept examples at the
  cap, the batch's ESS). The last row per method is the final set (ESS and accuracy only)."""
  rows = []
  for name in config.dataset_names:
    r = numbers[name]['methods']
    caps = [m for m in config.iwes_candidates if m in r]
    shown = [numbers[name]['iwes']] + ([caps[-1]] if caps[-1] != numbers[name]['iwes'] else [])
    for m in shown:
      logs, labels = r[m]['rounds'], r[m]['labels']
      acc = np.asarray(r[m]['per_seed'])
      noweight = (np.asarray(r[config.primary_noweight]['per_seed'])
                  if config.primary_noweight in r else None)
      ess = np.asarray(r[m]['ess_fraction_per_seed'])
      for k, n in enumerate(labels):
        col = lambda key, k=k: (_cell(np.asarray(logs[key])[:, k]) if key in logs
                                and k < np.asarray(logs[key]).shape[1] else '')
        rows.append([name, m, k if k < len(labels) - 1 else 'final', n, col('agreement'),
                     col('p_mean_available'), col('acceptance_rate'), col('capped_fraction'),
                     col('batch_ess_fraction'), _cell(ess[:, k]), col('loss_variance_factor'),
                     col('loss_weighted_ratio'),
                     _cell(acc[:, k] - noweight[:, k]) if noweight is not None else ''])
  return report.table(
      'Diagnosis: what the importance weights do, per round (mean [95% interval] over '
      f'{config.seeds} seeds)', DIAGNOSIS_COLUMNS, rows,
      note='set ESS / n = (sum w)^2 / (n sum w^2) of the weighted set a round trains on; loss '
           'variance factor = variance of its weighted mean loss / that of the plain mean (the '
           'noise the weights add to the loss, from f\'s losses on the set); weighted / plain '
           'loss = its weighted mean loss / the plain mean (below 1: the large weights sit on '
           'examples f already fits); f-g agreement (same argmax on the pool), mean p, '
           'acceptance, capped share and batch ESS / k describe the batch picked after the round.')


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
  data = loader.load_splits(ds, ('train', 'valid', 'test'), data_dir=config.get('data_dir'))
  pool, valid, test = data['train'], data['valid'], data['test']
  start = time.time()
  result = selection.run_selection(
      ds.loop, os.path.join(workdir, name), model_config=ds.model, pool=pool, test=test,
      valid=valid, runs=make_runs(config), seed_size=ds.seed_size, batch_size=ds.batch_size,
      budget=ds.budget, num_classes=loader.num_classes(ds.dataset, pool),
      chunk_size=config.chunk_size, keep_round_checkpoints=config.keep_round_checkpoints)
  rows = aggregate(config, result)
  logging.info('%s: accuracy at %s labels: %s', name, rows[config.method_names[0]]['labels'],
               {m: r['accuracy'] for m, r in rows.items()})
  return {'rows': rows, 'seconds': time.time() - start, 'pool': len(pool['label']),
          'valid': len(valid['label']), 'test': len(test['label'])}


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  check_config(config)
  os.makedirs(workdir, exist_ok=True)
  numbers, checks, figures = {}, [], []
  start = time.time()
  points = config.checks.final_points
  for name in config.dataset_names:
    out = run_dataset(config, name, workdir)
    rows = out['rows']
    checks.extend(make_checks(config, rows, name))
    final = {m: round(_final(rows, m, points), 4) for m in rows}
    numbers[name] = {
        'pool': out['pool'], 'valid': out['valid'], 'test': out['test'],
        'seconds': round(out['seconds'], 1),
        'iwes': best_on_validation(rows, config.iwes_candidates, points),
        'final_accuracy_mean_last_budgets': final,
        'methods': {m: {k: v for k, v in r.items() if k != 'weights_of_selected'}
                    for m, r in rows.items()}}
    if jax.process_index() == 0:
      figures.append(plot(name, rows, os.path.join(workdir, f'accuracy_{name}.png')))
  numbers['seconds'] = round(time.time() - start, 1)
  c = config.checks
  tables = [results_table(config, numbers)]
  if any(numbers[n]['iwes'] for n in config.dataset_names):
    tables += [caps_table(config, numbers), diagnosis_table(config, numbers)]
  notes = (f'{config.seeds} seed(s); accuracy is the mean of the round\'s two models on the test '
           f'split; each check is a per-seed paired difference (the methods of a seed share its '
           f'seed set) averaged over the last {c.final_points} budgets, decided by its 95% '
           't-interval over seeds. "IWeS" is IWeS-dis at the cap among '
           f'{list(config.iwes_candidates)} with the best accuracy on the validation split held '
           'out of the pool (never the test split), and the "best" baseline of a group is chosen '
           f'on validation too. Checks fixed in the config before the run: IWeS beats uniform '
           f'and the best top-k uncertainty baseline by more than {c.beats_margin}; '
           f'{config.active} is within {-c.competitive_margin} of the best active-learning '
           'baseline; the acceptance rate is lower in the last round than in the first. '
           f'Informational: IWeS minus {config.primary_noweight} (do the weights help?).')
  return report.make_summary(
      name='iwes', title='IWeS: importance-weighted subset selection', claim=CLAIM,
      numbers=numbers, checks=checks, tables=tables, workdir=workdir,
      figures=figures, notes=notes, config=config)

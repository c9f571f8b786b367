"""The experiment: base classifiers of several sizes x training-set sizes x seeds, each with ResMem
and a plain k-NN on the same embedding; the stylised regression; the claims checked.

    python -m resmem.main --config=configs/resmem/mnist1d.py:cpu --workdir=/tmp/resmem

Base models are trained with the common loop and checkpointed under workdir/models/..., so a rerun
reuses them; each fitted memory is saved next to its model (memory.npz).
"""

from __future__ import annotations

import os
from typing import Any

from absl import logging
import jax
import ml_collections
import numpy as np

from common import classifier
from common import config_lib
from common import report
from common.data import loader
from resmem import config_checks as checks
from resmem import memory as memory_lib
from resmem import regression

CLAIM = ('Adding a k-NN regressor on a trained model\'s residuals (ResMem) improves test accuracy '
         'when the base model cannot fit its training set, by more with more training data; it '
         'does not help a base that interpolates. In the stylised linear regression, ResMem\'s '
         'excess test risk falls with n while the capacity-limited base\'s stays flat.')


def _model_config(base: ml_collections.ConfigDict, model: ml_collections.ConfigDict, seed: int,
                  dataset: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  config = classifier.study_config(base, model, seed)
  with config.unlocked():
    config.dataset = dataset.dataset
    config.dataset_kwargs = ml_collections.ConfigDict(dict(dataset.get('dataset_kwargs', {})))
    config.train_split = dataset.train_split
  return config


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError (naming the dotted field) for a config this study cannot run; reads only
  the config: no data, no compile. Called at the top of `run`."""
  checks.names_in(config.dataset_names, 'dataset_names', config.datasets.keys(), 'datasets')
  for data_name in config.dataset_names:
    ds = config.datasets[data_name]
    for key in ('dataset', 'train_split', 'val_split', 'test_split'):
      checks.text(ds.get(key), f'datasets.{data_name}.{key}')
    models = config_lib.get_or_fail(config.dataset_models, data_name)
    checks.names_in(models, f'dataset_models.{data_name}', config.models.keys(), 'models')
  growth = tuple(config.growth_datasets)
  if growth and (len(growth) != 2 or len(set(growth)) != 2):
    raise config_lib.ConfigError(f'growth_datasets={growth!r}: expected () or two different '
                                 'datasets (the smaller training set, then the larger).')
  if growth:
    checks.names_in(growth, 'growth_datasets', config.dataset_names, 'dataset_names')
  checks.whole(config.seeds, 'seeds')
  cc = config.checks
  checks.number(cc.interpolation_threshold, 'checks.interpolation_threshold', low=0, high=1,
                low_open=True)
  checks.number(cc.gain_min, 'checks.gain_min', low=-1, high=1)
  checks.number(cc.growth_min, 'checks.growth_min', low=-1, high=1)
  checks.number(cc.no_gain_margin, 'checks.no_gain_margin', low=0, high=1)
  checks.number(cc.risk_slope_max, 'checks.risk_slope_max', low=-10, high=10)
  checks.number(cc.flat_ratio, 'checks.flat_ratio', low=1)
  checks.tuning_grid(config.tune)
  checks.knn_options(config.knn, 'knn', memory_lib.KNN_OPTIONS)
  config_lib.check_loop(config.classifier, 'classifier')
  for data_name in config.dataset_names:
    for model_name in config.dataset_models[data_name]:
      m = config.models[model_name]
      checks.whole(m.total_steps, f'models.{model_name}.total_steps')
      checks.number(m.learning_rate, f'models.{model_name}.learning_rate', low=0, low_open=True)
      try:  # the model, optimizer and sharding names, as each base model will train
        classifier.check_config(_model_config(config.classifier, m, 0, config.datasets[data_name]))
      except config_lib.ConfigError as e:
        raise config_lib.ConfigError(f'models.{model_name} (with classifier, on datasets.'
                                     f'{data_name}): {e}') from None
  rc = config.regression
  if rc.dims:
    for i, dim in enumerate(rc.dims):
      checks.whole(dim, f'regression.dims[{i}]')
    sizes = [checks.whole(n, f'regression.sizes[{i}]')
             for i, n in enumerate(checks.sequence(rc.sizes, 'regression.sizes'))]
    if len(sizes) < 2 or any(b <= a for a, b in zip(sizes, sizes[1:])):
      raise config_lib.ConfigError(f'regression.sizes={tuple(rc.sizes)!r}: expected at least two '
                                   'increasing training-set sizes (the risk must fall with n).')
    checks.number(rc.noise, 'regression.noise', low=0)
    checks.number(rc.norm_fraction, 'regression.norm_fraction', low=0, high=1, low_open=True)
    checks.whole(rc.test_size, 'regression.test_size')
    checks.number(rc.k_exponent, 'regression.k_exponent', low=0, high=1, low_open=True,
                  high_open=True)
    checks.whole(rc.seeds, 'regression.seeds')


def _accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
  return float(np.mean(np.argmax(scores, -1) == labels))


def run_classification(config, data_name: str, model_name: str, seed: int,
                       workdir: str) -> dict[str, Any]:
  """One base model: its train/test accuracy, ResMem's and plain k-NN's (tuned on validation)."""
  ds = config.datasets[data_name]
  splits = loader.load_splits(ds, ('train', 'val', 'test'), data_dir=config.get('data_dir'))
  num_classes = loader.num_classes(ds.dataset, splits['train'])
  mcfg = _model_config(config.classifier, config.models[model_name], seed, ds)
  model_dir = os.path.join(workdir, 'models', data_name, model_name, f'seed{seed}')
  trained = classifier.train_classifier(mcfg, model_dir, train_arrays=splits['train'],
                                        eval_arrays={}, num_classes=num_classes)
  outputs = {name: trained.logits_and_features(a['inputs'], config.classifier.eval_batch_size)
             for name, a in splits.items()}
  triple = lambda name: (outputs[name][1], outputs[name][0], splits[name]['label'])
  grid = dict(config.tune.to_dict())
  grid['ks'] = [k for k in grid['ks'] if k <= len(splits['train']['label'])]
  knn_kwargs = dict(config.knn.to_dict())
  memory, _ = memory_lib.tune(triple('train'), triple('val'), task='classification', **grid,
                              **knn_kwargs)
  grid_t1 = dict(grid, temperatures=(1.0,))  # the residuals of the raw softmax, T fixed at 1
  memory_t1, _ = memory_lib.tune(triple('train'), triple('val'), task='classification',
                                 **grid_t1, **knn_kwargs)
  knn_memory, _ = memory_lib.tune(triple('train'), triple('val'), task='classification',
                                  zero_base=True, **grid, **knn_kwargs)
  if jax.process_index() == 0:
    memory.save(os.path.join(model_dir, 'memory.npz'))
  test_logits, test_features = outputs['test']
  labels = splits['test']['label']
  return {
      'train_accuracy': _accuracy(outputs['train'][0], splits['train']['label']),
      'base': _accuracy(test_logits, labels),
      'resmem': _accuracy(memory.predict(test_features, test_logits), labels),
      'resmem_t1': _accuracy(memory_t1.predict(test_features, test_logits), labels),
      'knn': _accuracy(knn_memory.correction(test_features), labels),
      'resmem_params': {'k': memory.k, 'sigma': memory.sigma, 'temperature': memory.temperature},
      'knn_params': {'k': knn_memory.k, 'sigma': knn_memory.sigma},
      'train_size': int(len(splits['train']['label'])),
  }


ACCURACIES = ('train_accuracy', 'base', 'resmem', 'resmem_t1', 'knn')


def _row(rows: list[dict[str, Any]]) -> dict[str, Any]:
  """One (dataset, model) over seeds: the means, and every seed's value (the checks' intervals)."""
  out = {key: round(float(np.mean([r[key] for r in rows])), 4) for key in ACCURACIES}
  out['per_seed'] = {key: [r[key] for r in rows] for key in ACCURACIES}
  out['train_size'] = rows[0]['train_size']
  out['resmem_params'] = [r['resmem_params'] for r in rows]
  out['knn_params'] = [r['knn_params'] for r in rows]
  return out


def _gains(row, key='resmem', minus='base') -> list[float]:
  """Per-seed differences of two accuracies of one (dataset, model)."""
  return [a - b for a, b in zip(row['per_seed'][key], row['per_seed'][minus])]


def _interval_check(name: str, samples, compare: str, threshold: float, *,
                    informational: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
  """report.check of the mean of `samples` (one per seed), decided by its Student-t interval."""
  iv = report.mean_interval(samples)
  return report.check(name, round(iv['mean'], 5), compare=compare, threshold=threshold,
                      interval=(iv['low'], iv['high']), informational=informational), iv


def interpolates(config, row) -> bool:
  """Whether a base fits its training set (mean train accuracy over seeds >= the threshold):
  which of the claims applies to it."""
  return row['train_accuracy'] >= config.checks.interpolation_threshold


def classification_checks(config, table) -> tuple[list[dict[str, Any]], dict[str, Any]]:
  """The classification claims, one row per (dataset, model), each decided by its Student-t
  interval over seeds; returns (checks, {check name: interval})."""
  cc = config.checks
  rows = [(d, m, r) for d, models in table.items() for m, r in models.items()]
  out, intervals = [], {}

  def add(name, samples, compare, threshold, informational=False):
    c, iv = _interval_check(name, samples, compare, threshold, informational=informational)
    out.append(c)
    intervals[name] = iv

  for d, m, r in rows:
    if not interpolates(config, r):
      add(f'ResMem beats the base that cannot fit ({d}/{m}; ResMem - base test accuracy)',
          _gains(r), '>', cc.gain_min)
  if len(set(config.growth_datasets)) == 2:
    small, large = config.growth_datasets
    for m in table.get(small, {}):
      if (m in table.get(large, {}) and not interpolates(config, table[small][m])
          and not interpolates(config, table[large][m])):
        add(f'ResMem\'s gain grows with the training set ({m}: gain on {large} - gain on '
            f'{small}, seeds paired by index)',
            [b - a for a, b in zip(_gains(table[small][m]), _gains(table[large][m]))],
            '>', cc.growth_min)
  for d, m, r in rows:
    if interpolates(config, r):
      add(f'No gain for a base that interpolates ({d}/{m}; ResMem - base, T tuned)', _gains(r),
          '<=', cc.no_gain_margin)
  for d, m, r in rows:
    if interpolates(config, r):
      add(f'No gain for a base that interpolates, T fixed at 1 ({d}/{m})',
          _gains(r, 'resmem_t1'), '<=', cc.no_gain_margin, informational=True)
  for d, m, r in rows:
    add(f'ResMem beats plain k-NN on the same features ({d}/{m}; ResMem - k-NN)',
        _gains(r, 'resmem', 'knn'), '>', 0.0, informational=True)
  return out, intervals


def run_regression(config) -> dict[str, Any]:
  rc = config.regression
  out = {}
  for dim in rc.dims:
    problem = regression.Problem(dim=dim, noise=rc.noise, norm_fraction=rc.norm_fraction)
    per_n = {}
    for n in rc.sizes:
      runs = [regression.excess_risks(problem, n, test_size=rc.test_size,
                                      k_exponent=rc.k_exponent, seed=seed)
              for seed in range(rc.seeds)]
      per_n[n] = {'base': float(np.mean([r[0] for r in runs])),
                  'resmem': float(np.mean([r[1] for r in runs])), 'k': runs[0][2],
                  'base_seeds': [float(r[0]) for r in runs],
                  'resmem_seeds': [float(r[1]) for r in runs]}
      logging.info('regression d=%d n=%d: %s', dim, n, per_n[n])
    out[dim] = per_n
  return out


def regression_checks(config, results) -> list[dict[str, Any]]:
  """Per dimension: ResMem's excess risk falls with n (its log-log slope against n, per seed,
  below the threshold) and the base's stays flat (max / min over n, per seed, <= flat_ratio)."""
  cc = config.checks
  out = []
  for dim, per_n in results.items():
    log_n = np.log(np.asarray(list(per_n), np.float64))
    seeds = range(len(next(iter(per_n.values()))['resmem_seeds']))
    slopes = [float(np.polyfit(log_n, np.log([v['resmem_seeds'][i] for v in per_n.values()]),
                               1)[0]) for i in seeds]
    ratios = [max(v['base_seeds'][i] for v in per_n.values())
              / min(v['base_seeds'][i] for v in per_n.values()) for i in seeds]
    out.append(_interval_check(
        f'Regression d={dim}: ResMem\'s excess risk falls with n (log-log slope over n)', slopes,
        '<', cc.risk_slope_max)[0])
    out.append(_interval_check(
        f'Regression d={dim}: the capacity-limited base stays flat (max / min excess risk over '
        'n)', ratios, '<=', cc.flat_ratio)[0])
  return out


def _plot_classification(table, path):
  plt = report.pyplot()
  fig, axes = plt.subplots(1, len(table), figsize=(4.2 * len(table), 3.6), squeeze=False)
  for ax, (data_name, models) in zip(axes[0], table.items()):
    names = list(models)
    x = np.arange(len(names))
    for i, (key, label) in enumerate((('base', 'base'), ('resmem', 'ResMem'), ('knn', 'k-NN'))):
      ax.bar(x + (i - 1) * 0.27, [models[m][key] for m in names], 0.27, label=label)
    ax.set_xticks(x, [f"{m}\n(train {models[m]['train_accuracy']:.2f})" for m in names],
                  fontsize=7)
    lo = min(min(models[m][k] for k in ('base', 'resmem', 'knn')) for m in names)
    ax.set_ylim(max(0.0, lo - 0.05), 1.0)
    ax.set_title(data_name)
    ax.set_ylabel('test accuracy')
  axes[0][0].legend(fontsize=7)
  return report.save_figure(fig, path, dpi=90)


def _plot_regression(results, path):
  plt = report.pyplot()
  fig, ax = plt.subplots(figsize=(5, 3.6))
  for dim, per_n in results.items():
    ns = list(per_n)
    line, = ax.plot(ns, [per_n[n]['resmem'] for n in ns], 'o-', label=f'ResMem d={dim}')
    ax.plot(ns, [per_n[n]['base'] for n in ns], '--', color=line.get_color(), label=f'base d={dim}')
  ax.set_xscale('log')
  ax.set_yscale('log')
  ax.set_xlabel('training-set size n')
  ax.set_ylabel('excess test risk')
  ax.legend(fontsize=7)
  return report.save_figure(fig, path, dpi=90)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  check_config(config)
  os.makedirs(workdir, exist_ok=True)
  table = {}
  for data_name in config.dataset_names:
    table[data_name] = {}
    for model_name in config.dataset_models[data_name]:
      table[data_name][model_name] = _row([
          run_classification(config, data_name, model_name, seed, workdir)
          for seed in range(config.seeds)])
      logging.info('%s/%s: %s', data_name, model_name, table[data_name][model_name])
  checks, intervals = classification_checks(config, table)
  reg = run_regression(config) if config.regression.dims else {}
  if reg:
    checks += regression_checks(config, reg)
  figures = []
  if jax.process_index() == 0:
    figures.append(_plot_classification(table, os.path.join(workdir, 'accuracy.png')))
    if reg:
      figures.append(_plot_regression(reg, os.path.join(workdir, 'regression.png')))
  cc = config.checks
  notes = (f'Test accuracy over {config.seeds} seeds (base models of different initialisation '
           f'and batch order on the same splits); each check is decided by the 95% Student-t '
           f'interval of its per-seed values. A base counts as interpolating when its mean '
           f'training accuracy is >= {cc.interpolation_threshold}; "no gain" allows '
           f'{cc.no_gain_margin} of test accuracy. k, sigma and T are tuned on the validation '
           f'split for ResMem, k and sigma for the plain k-NN (same penultimate features, '
           f'L2-normalised); nothing is chosen on test. Regression: {config.regression.seeds} '
           f'seeds, k = n^{config.regression.k_exponent}; ResMem\'s risk falls when its log-log '
           f'slope against n is < {cc.risk_slope_max}, the base is flat when its max / min excess '
           f'risk over n is <= {cc.flat_ratio}. Checks marked informational (ResMem vs plain '
           'k-NN, the interpolating base at T = 1) are reported, not part of the verdict.')
  numbers = {'classification': table, 'regression': {f'd{d}': v for d, v in reg.items()}}
  iv = lambda name: intervals[name]
  ci = lambda v: f"{v['mean']:+.4f} [{v['low']:+.4f}, {v['high']:+.4f}]"
  tables = [report.table(
      f'Test accuracy (means over {config.seeds} seeds)',
      ['dataset', 'model', 'train acc', 'base', 'ResMem', 'ResMem at T=1', 'plain k-NN'],
      [[d, m, r['train_accuracy'], r['base'], r['resmem'], r['resmem_t1'], r['knn']]
       for d, models in table.items() for m, r in models.items()])]
  interp = [(d, m, r) for d, models in table.items() for m, r in models.items()
            if interpolates(config, r)]
  if interp:
    tables.append(report.table(
        'Diagnosis: the interpolating bases, ResMem - base at the tuned T and at T = 1 (mean '
        '[95% interval] over seeds)',
        ['dataset', 'model', 'train acc', 'T chosen on validation (per seed)', 'gain, T tuned',
         'gain, T = 1'],
        [[d, m, r['train_accuracy'], ' '.join(str(p['temperature']) for p in r['resmem_params']),
          ci(iv(f'No gain for a base that interpolates ({d}/{m}; ResMem - base, T tuned)')),
          ci(iv(f'No gain for a base that interpolates, T fixed at 1 ({d}/{m})'))]
         for d, m, r in interp]))
  if reg:
    tables.append(report.table(
        'Regression: excess risk of the base and of ResMem by training-set size',
        ['d', 'n', 'base', 'ResMem'],
        [[dim, n, float(f"{v['base']:.4g}"), float(f"{v['resmem']:.4g}")]
         for dim, per_n in reg.items() for n, v in per_n.items()]))
  return report.make_summary(
      name='resmem', title='ResMem: a base model plus k-NN on its residuals', claim=CLAIM,
      numbers=numbers, checks=checks, tables=tables, workdir=workdir, figures=figures,
      notes=notes, config=config)

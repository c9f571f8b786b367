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
  checks.number(config.interpolation_threshold, 'interpolation_threshold', low=0, high=1,
                low_open=True)
  checks.number(config.no_gain_margin, 'no_gain_margin', low=0)
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
    checks.number(rc.flat_ratio, 'regression.flat_ratio', low=1)


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


def _mean(rows, key):
  return float(np.mean([r[key] for r in rows]))


def classification_checks(config, table) -> dict[str, Any]:
  """The three classification claims from the per-(dataset, model) means."""
  thr = config.interpolation_threshold
  rows = [dict(r, dataset=d, model=m) for d, models in table.items() for m, r in models.items()]
  fits = [r for r in rows if r['train_accuracy'] < thr]
  interp = [r for r in rows if r['train_accuracy'] >= thr]
  checks = {}
  checks['resmem_beats_non_interpolating_base'] = {
      'gains': {f"{r['dataset']}/{r['model']}": round(r['resmem'] - r['base'], 4) for r in fits},
      'holds': bool(fits) and all(r['resmem'] > r['base'] for r in fits)}
  if len(set(config.growth_datasets)) != 2:
    return checks | {'resmem_beats_plain_knn': _knn_check(rows)}  # no second training-set size
  small, large = config.growth_datasets
  common = [m for m in table.get(small, {}) if m in table.get(large, {})
            and table[small][m]['train_accuracy'] < thr and table[large][m]['train_accuracy'] < thr]
  gain = lambda d, m: table[d][m]['resmem'] - table[d][m]['base']
  checks['gain_grows_with_data'] = {
      'models': common,
      f'gain_{small}': {m: round(gain(small, m), 4) for m in common},
      f'gain_{large}': {m: round(gain(large, m), 4) for m in common},
      'holds': bool(common) and all(gain(large, m) > gain(small, m) for m in common)}
  checks['no_gain_for_interpolating_base'] = {
      'gains': {f"{r['dataset']}/{r['model']}": round(r['resmem'] - r['base'], 4) for r in interp},
      'margin': config.no_gain_margin,
      'holds': bool(interp) and all(r['resmem'] - r['base'] <= config.no_gain_margin
                                    for r in interp)}
  checks['no_gain_for_interpolating_base_at_T1'] = {
      'gains': {f"{r['dataset']}/{r['model']}": round(r['resmem_t1'] - r['base'], 4)
                for r in interp},
      'margin': config.no_gain_margin,
      'holds': bool(interp) and all(r['resmem_t1'] - r['base'] <= config.no_gain_margin
                                    for r in interp), 'informational': True}
  checks['resmem_beats_plain_knn'] = _knn_check(rows)
  return checks


def _knn_check(rows):
  return {'gaps': {f"{r['dataset']}/{r['model']}": round(r['resmem'] - r['knn'], 4) for r in rows},
          'holds': all(r['resmem'] > r['knn'] for r in rows), 'informational': True}


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
                  'resmem': float(np.mean([r[1] for r in runs])), 'k': runs[0][2]}
      logging.info('regression d=%d n=%d: %s', dim, n, per_n[n])
    out[dim] = per_n
  return out


def regression_checks(config, results) -> dict[str, Any]:
  checks = {}
  for dim, per_n in results.items():
    base = [v['base'] for v in per_n.values()]
    res = [v['resmem'] for v in per_n.values()]
    falls = all(b < a for a, b in zip(res, res[1:]))
    flat = max(base) / min(base) <= config.regression.flat_ratio
    checks[f'd{dim}'] = {'resmem_falls_with_n': falls, 'base_flat': flat,
                         'resmem_first_over_last': round(res[0] / res[-1], 2),
                         'base_max_over_min': round(max(base) / min(base), 3),
                         'holds': bool(falls and flat)}
  return checks


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
      rows = [run_classification(config, data_name, model_name, seed, workdir)
              for seed in range(config.seeds)]
      table[data_name][model_name] = {
          **{key: round(_mean(rows, key), 4)
             for key in ('train_accuracy', 'base', 'resmem', 'resmem_t1', 'knn')},
          'resmem_std': round(float(np.std([r['resmem'] for r in rows])), 4),
          'base_std': round(float(np.std([r['base'] for r in rows])), 4),
          'train_size': rows[0]['train_size'],
          'resmem_params': [r['resmem_params'] for r in rows],
      }
      logging.info('%s/%s: %s', data_name, model_name, table[data_name][model_name])
  checks = classification_checks(config, table)
  reg = run_regression(config) if config.regression.dims else {}
  if reg:
    checks['regression'] = regression_checks(config, reg)
    checks['regression']['holds'] = all(c['holds'] for c in checks['regression'].values())
  figures = []
  if jax.process_index() == 0:
    figures.append(_plot_classification(table, os.path.join(workdir, 'accuracy.png')))
    if reg:
      figures.append(_plot_regression(reg, os.path.join(workdir, 'regression.png')))
  notes = (f'Means over {config.seeds} seeds. A base counts as interpolating when its training '
           f'accuracy is >= {config.interpolation_threshold}; "no gain" allows '
           f'{config.no_gain_margin} of test accuracy. k, sigma and T are tuned on the validation '
           f'split for ResMem, k and sigma for the plain k-NN (same penultimate features, '
           f'L2-normalised). Regression: {config.regression.seeds} seeds, '
           f'k = n^{config.regression.k_exponent}, base flat when max/min excess risk <= '
           f'{config.regression.flat_ratio}. Checks marked informational (ResMem vs plain k-NN, '
           'the interpolating base at T = 1) are reported, not part of the verdict.')
  numbers = {'classification': table, 'regression': {f'd{d}': v for d, v in reg.items()},
             'checks': checks}
  thresholds = {
      'resmem_beats_non_interpolating_base': 'every gain > 0',
      'gain_grows_with_data': 'larger gain on the larger training set, every model',
      'no_gain_for_interpolating_base': f'every gain <= {config.no_gain_margin}',
      'no_gain_for_interpolating_base_at_T1': f'every gain <= {config.no_gain_margin}',
      'resmem_beats_plain_knn': 'every gap > 0'}
  check_list = []
  for name, c in checks.items():
    if name == 'regression':
      for dim, r in c.items():
        if dim != 'holds':
          check_list.append(report.check(
              f'regression/{dim}: ResMem risk falls with n, base flat',
              {k: v for k, v in r.items() if k != 'holds'},
              f'falls, max/min base risk <= {config.regression.flat_ratio}', r['holds']))
      continue
    value = {k: v for k, v in c.items() if k not in ('holds', 'informational', 'margin',
                                                      'models')}
    check_list.append(report.check(name, value, thresholds.get(name), c['holds'],
                                   informational=bool(c.get('informational'))))
  tables = [report.table(
      f'Test accuracy (means over {config.seeds} seeds)',
      ['dataset', 'model', 'train acc', 'base', 'ResMem', 'ResMem at T=1', 'plain k-NN'],
      [[d, m, r['train_accuracy'], r['base'], r['resmem'], r['resmem_t1'], r['knn']]
       for d, models in table.items() for m, r in models.items()])]
  if reg:
    tables.append(report.table(
        'Regression: excess risk of the base and of ResMem by training-set size',
        ['d', 'n', 'base', 'ResMem'],
        [[dim, n, float(f"{v['base']:.4g}"), float(f"{v['resmem']:.4g}")]
         for dim, per_n in reg.items() for n, v in per_n.items()]))
  return report.make_summary(
      name='resmem', title='ResMem: a base model plus k-NN on its residuals', claim=CLAIM,
      numbers=numbers, checks=check_list, tables=tables, workdir=workdir, figures=figures,
      notes=notes, config=config)

"""The experiment: four settings x datasets x seeds; a weak h1 and a strong h2 trained with the
common loop; every deferral rule's curve on the test set; the claims checked.

    python -m cascades.main --config=configs/cascades/mnist1d.py:cpu --workdir=/tmp/cascades

Trained models are checkpointed under workdir/models/..., so a rerun reuses them.
"""

from __future__ import annotations

import os
from typing import Any

from absl import logging
import jax
import ml_collections
import numpy as np

from cascades import deferral
from cascades import posthoc
from cascades import settings as settings_lib
from common import classifier
from common import config_lib
from common import report
from common.data import loader

CLAIM = ('Confidence-based deferral is near-optimal in the standard setting (post-hoc within a '
         'small margin of it) but not when the second model is a specialist, labels are noisy or '
         'the distribution shifts: there a post-hoc rule learned from h1\'s outputs has a larger '
         'area under the deferral curve and higher accuracy at low deferral rates.')
LOW_RATES = (0.1, 0.2, 0.3)


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError (naming the dotted field) for a config that cannot run or would run
  wrongly; reads only the config (no data, no compile, no files). Called at the top of `run` and
  by common.app before anything runs."""
  config_lib.check_loop(config.classifier, 'classifier')
  config_lib.whole(config, 'classifier.seed', 0)
  config_lib.whole(config, 'seeds', 1)
  config_lib.whole(config, 'curve_points', 2)
  config_lib.real(config, 'checks.standard_margin', 0.0)
  config_lib.real(config, 'checks.min_gain')
  for name in config_lib.choice_tuple(config, 'dataset_names', tuple(config.datasets)):
    for role in ('h1', 'h2'):
      _check_model(config, f'datasets.{name}.{role}')
  config_lib.choice_tuple(config, 'setting_names', settings_lib.SETTINGS)
  for classes in ('specialist_classes', 'noisy_classes', 'tail_classes'):
    config_lib.whole_tuple(config, f'settings.{classes}', 0)
  config_lib.whole(config, 'settings.tail_factor', 1)
  config_lib.flag(config, 'settings.shift_heldout_balanced')
  targets = config_lib.choice_tuple(config, 'posthoc.targets', posthoc.TARGETS)
  config_lib.whole_tuple(config, 'posthoc.widths', 1, allow_empty=True)
  config_lib.whole(config, 'posthoc.steps', 1)
  config_lib.real(config, 'posthoc.learning_rate', 0.0, open_low=True)
  config_lib.choice(config, 'primary_target', targets)


def _check_model(config, name: str) -> None:
  """One trained model's entry: its steps, learning rate, pool factor and model config."""
  classifier.check_study_model(config, name)


def model_seed(config, seed: int) -> int:
  """The seed of the classifiers of run seed `seed` (0 .. seeds - 1): config.classifier.seed
  shifts every run's classifiers (their initialisation and batch order); the settings' data
  (label noise, the long tail) and the post-hoc rule follow the run seed alone."""
  return int(config.classifier.seed) + seed


def _pool(inputs: np.ndarray, factor: int) -> np.ndarray:
  """Average-pools the spatial axes of (N, L, C) or (N, H, W, C) by `factor` (a weaker h1)."""
  if factor == 1:
    return inputs
  n, *spatial, c = inputs.shape
  if any(s % factor for s in spatial):
    raise ValueError(f'Spatial shape {spatial} does not divide by pool factor {factor}.')
  split = [d for s in spatial for d in (s // factor, factor)]
  axes = tuple(2 + 2 * i for i in range(len(spatial)))
  return inputs.reshape([n] + split + [c]).mean(axis=axes)


def _train_and_predict(config, model_cfg, arrays, eval_sets, workdir, num_classes, seed):
  pool = model_cfg.get('pool', 1)
  train = dict(arrays, inputs=_pool(arrays['inputs'], pool))
  model_config = classifier.study_config(config.classifier, model_cfg, model_seed(config, seed))
  trained = classifier.train_classifier(model_config, workdir, train_arrays=train, eval_arrays={},
                                        num_classes=num_classes)
  return {name: np.asarray(jax.nn.softmax(trained.logits(_pool(a['inputs'], pool)), -1),
                           np.float64) for name, a in eval_sets.items()}


def evaluate_rules(p1_held, p2_held, y_held, p1_test, p2_test, y_test, posthoc_cfg, seed):
  """Every rule's deferral curve on the test set: {rule: DeferralCurve}."""
  c1, c2 = p1_test.argmax(1) == y_test, p2_test.argmax(1) == y_test
  scores = {name: fn(p1_test) for name, fn in deferral.CONFIDENCE_RULES.items()}
  for kind in posthoc_cfg.targets:
    rule = posthoc.fit(kind, p1_held, p2_held, y_held, widths=tuple(posthoc_cfg.widths),
                       steps=posthoc_cfg.steps, learning_rate=posthoc_cfg.learning_rate,
                       seed=seed)
    scores[f'posthoc_{kind}'] = rule.score(p1_test)
  scores['oracle'] = deferral.oracle_score(c1, c2)
  return {name: deferral.deferral_curve(s, c1, c2) for name, s in scores.items()}


def run_setting(config, dataset: str, setting: str, seed: int, workdir: str) -> dict[str, Any]:
  ds = config.datasets[dataset]
  splits = loader.load_splits(ds, ('train', 'heldout', 'test'), dataset=dataset,
                              data_dir=config.get('data_dir'))
  train, heldout, test = splits['train'], splits['heldout'], splits['test']
  num_classes = loader.num_classes(dataset, train)
  arrays = settings_lib.build(setting, train, heldout, test, num_classes=num_classes, seed=seed,
                              **config.settings.to_dict())
  evals = {'heldout': arrays['heldout'], 'test': arrays['test']}
  base = os.path.join(workdir, 'models', dataset, setting, f'seed{seed}')
  if config.classifier.seed:  # other classifiers: their own checkpoints, not the default run's
    base += f'_classifier_seed{config.classifier.seed}'
  p1 = _train_and_predict(config, ds.h1, arrays['train_h1'], evals, f'{base}/h1', num_classes,
                          seed)
  p2 = _train_and_predict(config, ds.h2, arrays['train_h2'], evals, f'{base}/h2', num_classes,
                          seed)
  y_held, y_test = arrays['heldout']['label'], arrays['test']['label']
  curves = evaluate_rules(p1['heldout'], p2['heldout'], y_held, p1['test'], p2['test'], y_test,
                          config.posthoc, seed)
  grid = np.linspace(0, 1, config.curve_points)
  return {
      'h1_accuracy': float(np.mean(p1['test'].argmax(1) == y_test)),
      'h2_accuracy': float(np.mean(p2['test'].argmax(1) == y_test)),
      'area': {k: c.area for k, c in curves.items()},
      'low_rate_accuracy': {k: float(np.mean(c.accuracy_at(np.array(LOW_RATES))))
                            for k, c in curves.items()},
      'accuracy_at_0.2': {k: c.accuracy_at(0.2) for k, c in curves.items()},
      'curve': {k: c.accuracy_at(grid).tolist() for k, c in curves.items()},
  }


def _mean(rows, key):
  return {rule: float(np.mean([r[key][rule] for r in rows])) for rule in rows[0][key]}


def paired_gaps(rows, primary: str) -> dict[str, list[float]]:
  """Per seed, the post-hoc rule minus confidence: {'area': [...], 'low_rates': [...]} (area
  under the deferral curve; mean accuracy at deferral rates LOW_RATES). Each seed's rules share
  that seed's h1, h2 and test set, so the difference is paired."""
  return {'area': [r['area'][primary] - r['area']['confidence'] for r in rows],
          'low_rates': [r['low_rate_accuracy'][primary] - r['low_rate_accuracy']['confidence']
                        for r in rows]}


def setting_checks(checks_cfg, dataset: str, setting: str,
                   gaps: dict[str, list[float]]) -> list[dict[str, Any]]:
  """The claim's rows for one dataset and setting, each decided by its Student-t interval over
  seeds: in the standard setting post-hoc minus confidence (AUC) lies within
  +-checks.standard_margin; in a failure setting post-hoc beats confidence (> checks.min_gain)
  in AUC and, as its own row, in accuracy at low deferral rates."""
  area, low = report.mean_interval(gaps['area']), report.mean_interval(gaps['low_rates'])
  if setting == 'standard':
    margin = float(checks_cfg.standard_margin)
    return [report.check(f'{dataset}/standard: post-hoc minus confidence, AUC', area['mean'],
                         compare='in', threshold=(-margin, margin),
                         interval=(area['low'], area['high']))]
  gain = float(checks_cfg.min_gain)
  return [
      report.check(f'{dataset}/{setting}: post-hoc minus confidence, AUC', area['mean'],
                   compare='>', threshold=gain, interval=(area['low'], area['high'])),
      report.check(f'{dataset}/{setting}: post-hoc minus confidence, accuracy at '
                   f'{int(LOW_RATES[0] * 100)}-{int(LOW_RATES[-1] * 100)}% deferral',
                   low['mean'], compare='>', threshold=gain, interval=(low['low'], low['high']))]


def _plot(dataset, per_setting, grid, path):
  plt = report.pyplot()
  fig, axes = plt.subplots(1, len(per_setting), figsize=(4 * len(per_setting), 3.6), squeeze=False)
  for ax, (setting, rows) in zip(axes[0], per_setting.items()):
    for rule in rows[0]['curve']:
      if rule in ('entropy', 'margin', 'posthoc_bin_prob'):
        continue  # kept in summary.json; the figure shows the main contrast
      ax.plot(grid, np.mean([r['curve'][rule] for r in rows], 0), label=rule,
              ls='--' if rule == 'oracle' else '-')
    ax.set_title(f'{dataset}: {setting}')
    ax.set_xlabel('deferral rate')
    ax.set_ylabel('accuracy')
  axes[0][0].legend(fontsize=7)
  return report.save_figure(fig, path, dpi=90)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  check_config(config)
  os.makedirs(workdir, exist_ok=True)
  primary = f'posthoc_{config.primary_target}'
  numbers, figures, check_list = {}, [], []
  grid = np.linspace(0, 1, config.curve_points)
  for dataset in config.dataset_names:
    per_setting = {}
    for setting in config.setting_names:
      rows = [run_setting(config, dataset, setting, seed, workdir) for seed in range(config.seeds)]
      per_setting[setting] = rows
      area, low = _mean(rows, 'area'), _mean(rows, 'low_rate_accuracy')
      gaps = paired_gaps(rows, primary)
      numbers[f'{dataset}/{setting}'] = {
          'h1_accuracy': float(np.mean([r['h1_accuracy'] for r in rows])),
          'h2_accuracy': float(np.mean([r['h2_accuracy'] for r in rows])),
          'area': {k: round(v, 4) for k, v in area.items()},
          'accuracy_at_10_30pct': {k: round(v, 4) for k, v in low.items()},
          'accuracy_at_20pct': {k: round(v, 4) for k, v in _mean(rows, 'accuracy_at_0.2').items()},
          'posthoc_minus_confidence_per_seed': {k: [round(v, 4) for v in vs]
                                                for k, vs in gaps.items()},
      }
      rows_checks = setting_checks(config.checks, dataset, setting, gaps)
      check_list.extend(rows_checks)
      logging.info('%s/%s: %s', dataset, setting,
                   [(c['name'], c['value'], c['interval'], c['state']) for c in rows_checks])
    if jax.process_index() == 0:
      figures.append(_plot(dataset, per_setting, grid,
                           os.path.join(workdir, f'curves_{dataset}.png')))
  rules = list(numbers[f'{config.dataset_names[0]}/{config.setting_names[0]}']['area'])
  tables = [report.table(
      'Area under the deferral curve (test accuracy of the cascade averaged over deferral '
      f'rates; means over {config.seeds} seeds)',
      ['dataset / setting', 'h1 acc', 'h2 acc'] + rules,
      [[key, round(v['h1_accuracy'], 3), round(v['h2_accuracy'], 3)] +
       [v['area'][r] for r in rules] for key, v in numbers.items()])]
  notes = (f'Post-hoc rule for the check: {primary} (an MLP{tuple(config.posthoc.widths)} on h1\'s '
           f'sorted probabilities, max, entropy, margin and one-hot argmax, fitted on the held-out '
           f'split). Each check is the per-seed paired difference post-hoc minus confidence over '
           f'{config.seeds} seeds, decided by its 95% Student-t interval: "standard" holds when '
           f'the AUC interval lies within +-{config.checks.standard_margin}; the other settings '
           f'need the AUC interval and, as its own row, the interval of the mean accuracy at '
           f'deferral rates {LOW_RATES} above {config.checks.min_gain}.')
  return report.make_summary(
      name='cascades', title='cascades: when does confidence-based deferral suffice?',
      claim=CLAIM, numbers=numbers, checks=check_list, tables=tables, workdir=workdir,
      figures=figures, notes=notes, config=config)

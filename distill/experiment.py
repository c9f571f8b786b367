"""The experiment: the linear-GD eigenspace demo; then self-distillation in several regimes x seeds
(teacher, one-hot student, distilled student, late-switch student), the deviation analysis, the
claims checked.

    python -m distill.main --config=configs/distill/mnist1d.py:cpu --workdir=/tmp/distill

Every model is trained with the common loop and checkpointed under workdir/models/<regime>/seed<s>/
<role>, so a rerun reuses them (a teacher shared by two regimes is trained once).
"""

from __future__ import annotations

import os
from typing import Any

from absl import logging
import jax
import ml_collections
import numpy as np

from common import config_lib
from common import report
from common.data import loader
from distill import config_check
from distill import copies
from distill import deviations as dev_lib
from distill import eigenspace
from distill import loss as loss_lib
from distill.teacher import Teacher

CLAIM = ('Self-distilled students deviate from their teachers systematically: they exaggerate the '
         'teacher\'s confidence (less confident where the teacher is unsure, not less where it is '
         'sure; log-odds slope > 1); switching from one-hot training to distillation late '
         'recovers most of distillation\'s gain; in linear regression by gradient descent the '
         'student\'s coefficients are a second spectral filter that shrinks small-eigenvalue '
         'directions.')
ROLES = ('teacher', 'onehot', 'distilled', 'late')


# ---------------------------------------------------------------------------------------------
# The config, checked before anything runs (distill/config_check.py holds the field checks).
# ---------------------------------------------------------------------------------------------
def check_config(config: ml_collections.ConfigDict) -> None:
  """Every field of every regime, dataset and check, from the config alone (no data, no compile);
  a ConfigError names the dotted field. run() calls it first, then loads every regime's data
  before any training (a train_size larger than its split stops the run there)."""
  config_check.check(config)


# ---------------------------------------------------------------------------------------------
# Data of a regime.
# ---------------------------------------------------------------------------------------------
def regime_data(config, regime_name: str) -> tuple[dict, dict, int]:
  """(train, test, num_classes) of a regime: its dataset, the first train_size training examples
  (0: all), labels of a label_noise fraction replaced by uniform draws (fixed noise_seed)."""
  regime = config_lib.get_or_fail(config.regimes, regime_name)
  ds = config_lib.get_or_fail(config.datasets, regime.data)
  splits = loader.load_splits(ds, ('train', 'test'), data_dir=config.get('data_dir'))
  train, test = dict(splits['train']), dict(splits['test'])
  num_classes = loader.num_classes(ds.dataset, train)
  if regime.train_size:
    if regime.train_size > len(train['label']):
      raise config_lib.ConfigError(f'regimes.{regime_name}.train_size={regime.train_size} exceeds '
                                   f'the {len(train["label"])} training examples.')
    train = {k: v[:regime.train_size] for k, v in train.items()}
  if regime.label_noise:
    if not 0 < regime.label_noise <= 1:
      raise config_lib.ConfigError(f'regimes.{regime_name}.label_noise must be in [0, 1].')
    rng = np.random.default_rng(config.noise_seed)
    hit = rng.random(len(train['label'])) < regime.label_noise
    labels = np.array(train['label'])
    labels[hit] = rng.integers(0, num_classes, int(hit.sum()))
    train['label'] = labels.astype(splits['train']['label'].dtype)
  return train, test, num_classes


def _data_key(regime) -> str:
  """Regimes with the same data share their teachers (e.g. a longer-student regime)."""
  return f'{regime.data}_n{regime.train_size or "all"}_noise{regime.label_noise:g}'


# ---------------------------------------------------------------------------------------------
# Models: a regime's teachers (one copy per seed) in one run, its students (one copy per seed and
# role) in another; see distill/copies.py.
# ---------------------------------------------------------------------------------------------
STUDENT_ROLES = ('onehot', 'distilled', 'late')


def _loop(config, ds, steps: int, seed: int) -> ml_collections.ConfigDict:
  loop = config.loop.copy_and_resolve_references()
  loop.seed = seed
  loop.total_steps = int(steps)
  loop.optimizer.learning_rate = ds.learning_rate
  loop.log_every_steps = max(1, int(steps) // 4)
  loop.checkpoint_every_steps = int(steps)
  loop.eval_every_steps = 0
  return loop


def run_regime(config, regime_name: str, workdir: str,
               data: tuple[dict, dict, int] | None = None) -> list[dict[str, Any]]:
  """Trains a regime's teachers and students; returns one row per seed: each role's
  probabilities on train and test, test accuracies, labels. `data`: regime_data's result."""
  regime = config.regimes[regime_name]
  ds = config.datasets[regime.data]
  train, test, num_classes = data or regime_data(config, regime_name)
  seeds = int(config.seeds)
  student_steps = int(round(ds.steps * regime.student_length))
  switch = loss_lib.switch_step_of(config.switch_fraction, student_steps)
  kwargs = dict(model_config=ds.model, arrays=train, num_classes=num_classes, augment=ds.augment)
  # The loop's seed draws every copy's initialisation, the batch order and the augmentations;
  # the students' run uses another than the teachers'.
  _, teacher_vars, _ = copies.train(
      _loop(config, ds, ds.steps, config.loop.seed), os.path.join(
          workdir, 'models', _data_key(regime), 'teachers'), num_copies=seeds, **kwargs)
  # Student copy (role r, seed s) is copy r * seeds + s; its teacher is teacher copy s.
  num_students = len(STUDENT_ROLES) * seeds
  teacher_index = [s for _ in STUDENT_ROLES for s in range(seeds)]
  teacher = Teacher.from_model(copies.build(ds.model, num_classes, num_students),
                               copies.select(teacher_vars, teacher_index), num_classes)
  alphas = [1.0 if role == 'onehot' else config.alpha for role in STUDENT_ROLES
            for _ in range(seeds)]
  switches = [{'onehot': 0, 'distilled': 0, 'late': switch}[role] for role in STUDENT_ROLES
              for _ in range(seeds)]
  _, student_vars, _ = copies.train(
      _loop(config, ds, student_steps, config.loop.seed + 1), os.path.join(
          workdir, 'models', regime_name, 'students'), num_copies=num_students, teacher=teacher,
      alphas=alphas, switch_steps=switches, tau=config.tau, **kwargs)
  probs = {}
  for split, arrays in (('train', train), ('test', test)):
    p_teacher = copies.probabilities(ds.model, teacher_vars, arrays['inputs'],
                                     num_classes=num_classes, num_copies=seeds)
    p_students = copies.probabilities(ds.model, student_vars, arrays['inputs'],
                                      num_classes=num_classes, num_copies=num_students)
    probs[split] = {'teacher': p_teacher,
                    **{role: p_students[r * seeds:(r + 1) * seeds]
                       for r, role in enumerate(STUDENT_ROLES)}}
  rows = []
  for s in range(seeds):
    row_probs = {role: {split: probs[split][role][s] for split in probs} for role in ROLES}
    rows.append({'probs': row_probs,
                 'accuracy': {role: float(np.mean(p['test'].argmax(1) == test['label']))
                              for role, p in row_probs.items()},
                 'labels': {'train': train['label'], 'test': test['label']},
                 'train_size': len(train['label']), 'switch_step': switch,
                 'student_steps': student_steps})
  return rows


def deviation_table(config, rows) -> dict[str, Any]:
  """Each student against its teacher, on train and test, by the true label and by the teacher's
  top class; seeds pooled."""
  out = {}
  for role in ('distilled', 'late', 'onehot'):
    for split in ('train', 'test'):
      for reference in ('label', 'teacher_top'):
        parts = [dev_lib.analyse(r['probs']['teacher'][split], r['probs'][role][split],
                                 r['labels'][split] if reference == 'label' else None,
                                 bins=config.bins) for r in rows]
        out[f'{role}/{split}/{reference}'] = dev_lib.pooled(parts)
  return out


# ---------------------------------------------------------------------------------------------
# Checks (thresholds are config fields, fixed before the run).
# ---------------------------------------------------------------------------------------------
def exaggeration_check(config, dev: dev_lib.Deviations) -> dict[str, Any]:
  c = config.checks
  unsure = dev.mean_deviation(0.0, c.unsure_below)
  sure = dev.mean_deviation(c.sure_from, 1.0)
  n_unsure = int(np.sum(dev.p_teacher < c.unsure_below))
  n_sure = int(np.sum(dev.p_teacher >= c.sure_from))
  enough = n_unsure >= c.min_points and n_sure >= c.min_points
  parts = {'below_where_unsure': unsure < 0, 'not_below_where_sure': sure >= -c.sure_tolerance,
           'slope_above_1': dev.log_odds_slope > c.slope_above}
  return {'deviation_where_unsure': round(unsure, 4) if np.isfinite(unsure) else None,
          'deviation_where_sure': round(sure, 4) if np.isfinite(sure) else None,
          'log_odds_slope': round(dev.log_odds_slope, 4), 'points_unsure': n_unsure,
          'points_sure': n_sure, **{k: bool(v) for k, v in parts.items()},
          'holds': bool(all(parts.values())) if enough else None}


def late_check(config, accuracy: dict[str, list[float]]) -> dict[str, Any]:
  mean = {k: float(np.mean(v)) for k, v in accuracy.items()}
  gain = mean['distilled'] - mean['onehot']
  late_gain = mean['late'] - mean['onehot']
  has_gain = gain > config.checks.min_gain
  return {'distillation_gain': round(gain, 4), 'late_gain': round(late_gain, 4),
          'gain_std_over_seeds': round(float(np.std(np.array(accuracy['distilled'])
                                                    - np.array(accuracy['onehot']))), 4),
          'recovered_fraction': round(late_gain / gain, 3) if has_gain else None,
          'holds': bool(late_gain >= config.checks.recovery_fraction * gain) if has_gain
                   else None}


def eigenspace_run(config) -> tuple[dict[str, Any], list[eigenspace.EigenView]]:
  ec = config.eigenspace
  views = []
  for seed in range(ec.seeds):
    problem = eigenspace.make_problem(ec.n, ec.d, decay=ec.decay, noise=ec.noise,
                                      test_size=ec.test_size, seed=seed)
    views.append(eigenspace.distil_linear(problem, teacher_steps=ec.teacher_steps,
                                          student_steps=ec.student_steps,
                                          eta_times_lambda_max=ec.eta_times_lambda_max))
  c = config.checks
  top, bottom, error = _eigen_ratios(config, views)
  mse = {k: round(float(np.mean([v.test_mse[k] for v in views])), 4)
         for k in ('teacher', 'student', 'ols')}
  numbers = {
      'test_mse': mse, 'student_below_teacher': mse['student'] < mse['teacher'],
      'ratio_top': round(top, 4), 'ratio_bottom': round(bottom, 4),
      'closed_form_max_error': float(f'{error:.3g}'),
      'eta_lambda_max': ec.eta_times_lambda_max,
      'holds': bool(top >= c.ratio_top_min and bottom <= c.ratio_bottom_max
                    and error <= c.closed_form_tolerance)}
  return numbers, views


def _eigen_ratios(config, views) -> tuple[float, float, float]:
  """(mean a_S / a_T over the top ratio_fraction of directions, over the bottom one, the largest
  gap between gradient descent and the closed forms), seeds averaged, unrounded."""
  f = config.checks.ratio_fraction
  return (float(np.mean([v.mean_ratio(0.0, f) for v in views])),
          float(np.mean([v.mean_ratio(1.0 - f, 1.0) for v in views])),
          max(v.closed_form_error for v in views))


def make_checks(config, numbers: dict[str, Any],
                views=()) -> tuple[list[dict[str, Any]], bool | None]:
  """(report.check rows, the verdict): each claim split into its parts, one value against one
  threshold per row, each row holding when its own comparison does.

  Some rows are a claim's preconditions: enough points on each side of the exaggeration check,
  at least one regime with a distillation gain for late switching. When one does not hold, the
  claim's other rows cannot decide (their state is inconclusive, whatever they show). The verdict
  (the rule distill has always used): False when a deciding row that can decide fails, else None
  when any deciding claim is inconclusive, else True."""
  c = config.checks
  rows: list[tuple[dict[str, Any], bool | None]] = []  # (row, state: True / False / None)

  def add(name, value, threshold, holds, note, *, decides=True, informational=False):
    """`decides` False: the row's state is inconclusive (None) whatever it shows."""
    holds = bool(holds)
    rows.append((report.check(name, value, threshold, holds, note=note,
                              informational=informational), holds if decides else None))

  if views:
    top, bottom, error = _eigen_ratios(config, views)
    e = numbers['eigenspace']
    seeds = f'{len(views)} seed(s)'
    add('eigenspace_ratio_falls/ratio_top', e['ratio_top'], f'>= {c.ratio_top_min}',
        top >= c.ratio_top_min, f'mean a_S / a_T over the top {c.ratio_fraction:.0%} of '
        f'directions, {seeds}')
    add('eigenspace_ratio_falls/ratio_bottom', e['ratio_bottom'], f'<= {c.ratio_bottom_max}',
        bottom <= c.ratio_bottom_max, f'mean a_S / a_T over the bottom {c.ratio_fraction:.0%} of '
        f'directions, {seeds}')
    add('eigenspace_ratio_falls/closed_form_max_error', e['closed_form_max_error'],
        f'<= {c.closed_form_tolerance:g}', error <= c.closed_form_tolerance,
        'largest |gradient descent - closed form| over both models, relative to max |a_OLS|, '
        f'{seeds}')

  # Exaggeration: deciding on the training set for the distilled student; the same on test and
  # for the one-hot control are reported beside it.
  for name, group in numbers['exaggeration'].items():
    for sub, e in (('', group), ('/test', group['test']),
                   ('/onehot_control', group['onehot_control'])):
      prefix = f'student_exaggerates_confidence/{name}{sub}'
      enough = e['holds'] is not None
      informational = bool(sub)
      for key, bound in (('points_unsure', f'p_T < {c.unsure_below}'),
                         ('points_sure', f'p_T >= {c.sure_from}')):
        # A precondition: too few points leave the claim inconclusive, not failed.
        add(f'{prefix}/{key}', e[key], f'>= {c.min_points}', e[key] >= c.min_points,
            f'examples (seeds pooled) where {bound}; fewer: the three parts cannot decide',
            decides=e[key] >= c.min_points, informational=informational)
      for part, key, threshold, what in (
          ('below_where_unsure', 'deviation_where_unsure', '< 0',
           f'mean p_S - p_T (true label) where p_T < {c.unsure_below}'),
          ('not_below_where_sure', 'deviation_where_sure', f'>= -{c.sure_tolerance}',
           f'mean p_S - p_T (true label) where p_T >= {c.sure_from}'),
          ('slope_above_1', 'log_odds_slope', f'> {c.slope_above}',
           'slope of logit p_S on logit p_T')):
        add(f'{prefix}/{key}', e[key], threshold, e[part],
            what + ('' if enough else '; too few points: inconclusive'), decides=enough,
            informational=informational)

  late = {name: r['late'] for name, r in numbers['regimes'].items()}
  gains = ', '.join(f'{n} {v["distillation_gain"]:+.4f}' for n, v in late.items())
  with_gain = {n: v for n, v in late.items() if v['holds'] is not None}
  add('late_switch_recovers_gain/regimes_with_gain', len(with_gain), '>= 1', with_gain,
      f'regimes where distillation gains more than {c.min_gain} test accuracy over the one-hot '
      f'student (distilled - one-hot: {gains or "no regimes"}); none: no gain to recover, '
      'inconclusive', decides=bool(with_gain))
  for name, v in with_gain.items():
    add(f'late_switch_recovers_gain/{name}', v['recovered_fraction'], f'>= {c.recovery_fraction}',
        v['holds'], f'(late - one-hot) / (distilled - one-hot) test accuracy: '
        f'{v["late_gain"]:+.4f} / {v["distillation_gain"]:+.4f} (std of the gain over seeds '
        f'{v["gain_std_over_seeds"]})')
  if late:
    best = max(late, key=lambda n: late[n]['distillation_gain'])
    add('distillation_helps/best_gain', late[best]['distillation_gain'], f'> {c.min_gain}',
        any(v['distillation_gain'] > c.min_gain for v in late.values()),
        f'the largest distilled - one-hot test accuracy ({best}); all: {gains}',
        informational=True)

  states = [state for row, state in rows if not row['informational']]
  if any(state is False for state in states):
    reproduced = False
  else:
    reproduced = None if any(state is None for state in states) else True
  return [row for row, _ in rows], reproduced


# ---------------------------------------------------------------------------------------------
# Figures.
# ---------------------------------------------------------------------------------------------
def _plot_deviations(tables: dict[str, dict], regimes, path: str, max_points: int = 3000):
  plt = report.pyplot()
  fig, axes = plt.subplots(2, len(regimes), figsize=(4.2 * len(regimes), 7.4), squeeze=False)
  rng = np.random.default_rng(0)
  for col, name in enumerate(regimes):
    table = tables[name]
    dev = table['distilled/train/label']
    keep = rng.permutation(len(dev.p_teacher))[:max_points]
    ax = axes[0][col]
    ax.scatter(dev.p_teacher[keep], dev.p_student[keep], s=3, alpha=0.3)
    ax.plot([0, 1], [0, 1], 'k--', lw=1)
    ax.set_title(f'{name}: train, distilled student')
    ax.set_xlabel('teacher p_T(y|x)')
    ax.set_ylabel('student p_S(y|x)')
    ax = axes[1][col]
    centres = (dev.bin_edges[1:] + dev.bin_edges[:-1]) / 2
    for key, style in (('distilled/train/label', 'o-'), ('late/train/label', 's-'),
                       ('onehot/train/label', '^-'), ('distilled/test/label', 'o--')):
      ax.plot(centres, table[key].binned_deviation, style, label=key.replace('/label', ''))
    ax.axhline(0, color='k', lw=0.8)
    ax.set_xlabel('teacher p_T(y|x) bin')
    ax.set_ylabel('mean p_S - p_T')
  axes[1][0].legend(fontsize=7)
  return report.save_figure(fig, path, dpi=90)


def _plot_eigenspace(views, path: str):
  plt = report.pyplot()
  fig, ax = plt.subplots(figsize=(5.5, 4))
  for i, v in enumerate(views):
    ax.plot(v.lam, v.ratio, '.', ms=4, label='a_S / a_T (gradient descent)' if i == 0 else None)
  v = views[0]
  lam = np.geomspace(v.lam.min(), v.lam.max(), 200)
  ax.plot(lam, eigenspace.spectral_filter(lam, v.eta, v.student_steps), 'k-', lw=1,
          label="1 - (1 - eta lambda)^T' (closed form)")
  ax.plot(lam, eigenspace.spectral_filter(lam, v.eta, v.teacher_steps), ':', color='gray',
          label='teacher: a_T / a_OLS')
  ax.set_xscale('log')
  ax.set_xlabel('eigenvalue lambda_k of X^T X / n')
  ax.set_ylabel('coefficient ratio')
  ax.set_title(f'student / teacher in eigenspace (T = {v.teacher_steps}, T\' = {v.student_steps})')
  ax.legend(fontsize=7)
  return report.save_figure(fig, path, dpi=90)


def _plot_accuracy(table, path: str):
  plt = report.pyplot()
  names = list(table)
  fig, ax = plt.subplots(figsize=(1.6 * len(names) + 2, 3.6))
  x = np.arange(len(names))
  for i, role in enumerate(ROLES):
    means = [table[n]['test_accuracy'][role]['mean'] for n in names]
    stds = [table[n]['test_accuracy'][role]['std'] for n in names]
    ax.bar(x + (i - 1.5) * 0.2, means, 0.2, yerr=stds, label=role)
  lo = min(table[n]['test_accuracy'][r]['mean'] for n in names for r in ROLES)
  ax.set_ylim(max(0.0, lo - 0.1), 1.0)
  ax.set_xticks(x, names, fontsize=8)
  ax.set_ylabel('test accuracy')
  ax.legend(fontsize=7)
  return report.save_figure(fig, path, dpi=90)


# ---------------------------------------------------------------------------------------------
# The run.
# ---------------------------------------------------------------------------------------------
def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  check_config(config)
  # Every regime's data before any training: a train_size beyond its split or a dataset that does
  # not load stops the run here, not after the earlier regimes trained (loads are cached).
  data = {name: regime_data(config, name) for name in config.regime_names}
  os.makedirs(workdir, exist_ok=True)

  numbers: dict[str, Any] = {}
  figures = []
  views = []
  if config.eigenspace.seeds:
    numbers['eigenspace'], views = eigenspace_run(config)
    logging.info('eigenspace: %s', numbers['eigenspace'])

  table, tables = {}, {}
  for name in config.regime_names:
    rows = run_regime(config, name, workdir, data[name])
    accuracy = {role: [r['accuracy'][role] for r in rows] for role in ROLES}
    tables[name] = deviation_table(config, rows)
    table[name] = {
        'train_size': rows[0]['train_size'], 'student_steps': rows[0]['student_steps'],
        'switch_step': rows[0]['switch_step'],
        'test_accuracy': {role: {'mean': round(float(np.mean(v)), 4),
                                 'std': round(float(np.std(v)), 4)}
                          for role, v in accuracy.items()},
        'late': late_check(config, accuracy),
        'deviations': {k: d.to_dict() for k, d in tables[name].items()},
    }
    logging.info('%s: accuracy %s; late %s', name, table[name]['test_accuracy'],
                 table[name]['late'])
  numbers['regimes'] = table

  exaggeration = {}
  for name in config.deviation_regimes:
    exaggeration[name] = exaggeration_check(config, tables[name]['distilled/train/label'])
    # The same on test and for the one-hot control, reported beside it.
    exaggeration[name]['test'] = exaggeration_check(config, tables[name]['distilled/test/label'])
    exaggeration[name]['onehot_control'] = exaggeration_check(
        config, tables[name]['onehot/train/label'])
  numbers['exaggeration'] = exaggeration
  checks, reproduced = make_checks(config, numbers, views)

  if jax.process_index() == 0:
    if config.deviation_regimes:
      figures.append(_plot_deviations(tables, tuple(config.deviation_regimes),
                                      os.path.join(workdir, 'deviations.png')))
    if views:
      figures.append(_plot_eigenspace(views, os.path.join(workdir, 'eigenspace.png')))
    if table:
      figures.append(_plot_accuracy(table, os.path.join(workdir, 'accuracy.png')))
  c = config.checks
  notes = (f'Self-distillation (student = teacher\'s architecture, another seed), alpha = '
           f'{config.alpha}, tau = {config.tau}, the teacher evaluated on the student\'s augmented '
           f'inputs; late students switch to distillation at {config.switch_fraction:.0%} of '
           f'training. {config.seeds} seeds per regime, deviations pooled over seeds. '
           f'Exaggeration holds when the mean p_S - p_T (true label, training set) is < 0 where '
           f'p_T < {c.unsure_below}, >= -{c.sure_tolerance} where p_T >= {c.sure_from}, and the '
           f'log-odds slope is > {c.slope_above} (at least {c.min_points} points each side, else '
           f'inconclusive), in each of {tuple(config.deviation_regimes)}. Late switching holds '
           f'where distillation gains more than {c.min_gain} test accuracy over the one-hot '
           f'student, when the late student keeps >= {c.recovery_fraction:.0%} of that gain '
           f'(regimes without a gain do not count; none with a gain: inconclusive). Eigenspace: '
           f'mean a_S/a_T >= {c.ratio_top_min} over the top {c.ratio_fraction:.0%} of directions '
           f'and <= {c.ratio_bottom_max} over the bottom {c.ratio_fraction:.0%}, GD matching the '
           f'closed forms within {c.closed_form_tolerance}. Each part is its own check row; the '
           'exaggeration rows on test and for the one-hot control, and "distillation_helps" (the '
           'best gain over regimes), are reported, not part of the verdict. The point counts and '
           'regimes_with_gain rows are preconditions: when one does not hold, its claim is '
           'inconclusive (its rows say so in their notes). Verdict: false when a deciding row '
           'that can decide fails, else inconclusive when a precondition fails, else true.')
  return report.make_summary(
      name='distill', title='distill: student-teacher deviations in distillation', claim=CLAIM,
      numbers=numbers, checks=checks, reproduced=reproduced, workdir=workdir, figures=figures,
      notes=notes, config=config)

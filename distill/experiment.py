"""The experiment: the linear-GD eigenspace demo; then self-distillation in several regimes x seeds
(teacher, one-hot student, distilled student, late-switch student), the deviation analysis, the
claims checked.

    python -m distill.main --config=configs/distill/mnist1d.py:cpu --workdir=/tmp/distill

A regime's teachers (one per seed) are one common.ensemble run, its students (one per seed and
role) another (distill/training.py); each is checkpointed under workdir/models/, so a rerun reuses
them (teachers shared by two regimes with the same data are trained once).
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
from distill import claims
from distill import deviations as dev_lib
from distill import eigenspace
from distill import exaggeration
from distill import loss as loss_lib
from distill import training
from distill.teacher import Teacher

CLAIM = ('Self-distilled students deviate from their teachers systematically: they exaggerate the '
         'teacher\'s confidence (less confident where the teacher is unsure, not less where it is '
         'sure), beyond what regression to the mean gives an independently trained model; '
         'switching from one-hot training to distillation late recovers most of distillation\'s '
         'gain; in linear regression by gradient descent the student, a second spectral filter '
         'that shrinks small-eigenvalue directions, has a lower test error than its teacher.')
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
# Models: a regime's teachers (one per seed) in one ensemble, its students (one per seed and role)
# in another; see distill/training.py.
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
  # Each run's seed draws its models' initialisations, augmentations and batch order; the
  # students' run uses another than the teachers'. Teachers draw their own batch orders (seeds are
  # independent replicates); a seed's students share one order (its roles are paired), and the
  # seeds' orders are independent (an interval over seeds sees the batch-order noise).
  model, teachers = training.train(
      _loop(config, ds, ds.steps, config.loop.seed), os.path.join(
          workdir, 'models', _data_key(regime), 'teachers'), num_models=seeds,
      shared_order=False, **kwargs)
  splits = (('train', train), ('test', test))
  # Each ensemble is evaluated as soon as it has trained and then let go: while the students train
  # the teachers are only the host copy of their variables that the students' loss reads.
  p_teacher = {split: training.probabilities(model, teachers.state, arrays['inputs'])
               for split, arrays in splits}
  teacher = Teacher.from_models(model, training.variables_of(teachers.state), num_classes)
  del teachers
  # Student (role r, seed s) is model r * seeds + s; its teacher is teacher s.
  num_students = len(STUDENT_ROLES) * seeds
  alphas = [1.0 if role == 'onehot' else config.alpha for role in STUDENT_ROLES
            for _ in range(seeds)]
  switches = [{'onehot': 0, 'distilled': 0, 'late': switch}[role] for role in STUDENT_ROLES
              for _ in range(seeds)]
  _, students = training.train(
      _loop(config, ds, student_steps, config.loop.seed + 1), os.path.join(
          workdir, 'models', regime_name, 'students'), num_models=num_students, teacher=teacher,
      teacher_index=[s for _ in STUDENT_ROLES for s in range(seeds)], alphas=alphas,
      switch_steps=switches, tau=config.tau,
      shared_order=[s for _ in STUDENT_ROLES for s in range(seeds)], **kwargs)
  probs = {}
  for split, arrays in splits:
    p_students = training.probabilities(model, students.state, arrays['inputs'])
    probs[split] = {'teacher': p_teacher[split],
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
# Per-seed numbers for the checks (distill/claims.py turns them into rows and the diagnosis).
# ---------------------------------------------------------------------------------------------
def paired_accuracy(rows) -> dict[str, list[float]]:
  """Per seed (the students of a seed share their batches): distilled - one-hot and late - one-hot
  test accuracy."""
  acc = lambda role: np.array([r['accuracy'][role] for r in rows])
  return {'gain': [round(float(v), 6) for v in acc('distilled') - acc('onehot')],
          'late_gain': [round(float(v), 6) for v in acc('late') - acc('onehot')]}


def exaggeration_numbers(config, rows) -> dict[str, dict[str, list]]:
  """{split: {stat: per-seed values}} of the distilled students (distill/exaggeration.py)."""
  c = config.checks
  out = {}
  for split in ('train', 'test'):
    stats = exaggeration.per_seed(rows, split, unsure_below=c.unsure_below,
                                  sure_from=c.sure_from)
    out[split] = {k: [v if isinstance(v, int) else round(v, 6) for v in vs]
                  for k, vs in stats.items()}
  return out


def eigenspace_run(config) -> tuple[dict[str, Any], list[eigenspace.EigenView]]:
  """The linear demo over config.eigenspace.seeds random problems: per-seed student - teacher
  test MSE and coefficient ratios (top / bottom ratio_fraction of the directions)."""
  ec, f = config.eigenspace, config.checks.ratio_fraction
  views = []
  for seed in range(ec.seeds):
    problem = eigenspace.make_problem(ec.n, ec.d, decay=ec.decay, noise=ec.noise,
                                      test_size=ec.test_size, seed=seed)
    views.append(eigenspace.distil_linear(problem, teacher_steps=ec.teacher_steps,
                                          student_steps=ec.student_steps,
                                          eta_times_lambda_max=ec.eta_times_lambda_max))
  per_seed = {
      'student_minus_teacher_mse': [v.test_mse['student'] - v.test_mse['teacher'] for v in views],
      'ratio_top': [v.mean_ratio(0.0, f) for v in views],
      'ratio_bottom': [v.mean_ratio(1.0 - f, 1.0) for v in views]}
  numbers = {
      'test_mse': {k: round(float(np.mean([v.test_mse[k] for v in views])), 5)
                   for k in ('teacher', 'student', 'ols')},
      'per_seed': {k: [round(float(x), 6) for x in v] for k, v in per_seed.items()},
      # GD against its closed forms: a test (tests/distill/test_analysis.py), shown here.
      'closed_form_max_error': float(f'{max(v.closed_form_error for v in views):.3g}'),
      'eta_lambda_max': ec.eta_times_lambda_max}
  return numbers, views


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

  table, tables, exaggerations = {}, {}, {}
  for name in config.regime_names:
    rows = run_regime(config, name, workdir, data[name])
    accuracy = {role: [r['accuracy'][role] for r in rows] for role in ROLES}
    tables[name] = deviation_table(config, rows)
    exaggerations[name] = exaggeration_numbers(config, rows)
    table[name] = {
        'train_size': rows[0]['train_size'], 'student_steps': rows[0]['student_steps'],
        'student_length': config.regimes[name].student_length,
        'switch_step': rows[0]['switch_step'],
        'test_accuracy': {role: {'mean': round(float(np.mean(v)), 4),
                                 'std': round(float(np.std(v)), 4),
                                 'per_seed': [round(float(x), 4) for x in v]}
                          for role, v in accuracy.items()},
        'paired': paired_accuracy(rows),
        'deviations': {k: d.to_dict() for k, d in tables[name].items()},
    }
    logging.info('%s: accuracy %s', name, table[name]['test_accuracy'])
  numbers['regimes'] = table
  numbers['exaggeration'] = exaggerations
  checks = claims.make_checks(config, numbers)

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
           f'training; {config.seeds} seeds per regime, each check decided by a 95% Student-t '
           f'interval over seeds (paired: a seed\'s students share their batches). Exaggeration '
           f'(training set, true label, in {tuple(config.deviation_regimes)}): against the '
           f'one-hot control binned by the teacher\'s p_T (p_S - p_O < 0 where p_T < '
           f'{c.unsure_below}, >= -{c.sure_tolerance} where p_T >= {c.sure_from}, log-odds slope '
           f'above the control\'s) and against an independent teacher R of another seed (p_S - '
           f'p_T < 0 where p_R < {c.unsure_below}; instrumental log-odds slope > '
           f'{c.reference_slope_above}); fewer than {c.min_points} points in a seed: '
           f'inconclusive. Late switching: in each regime whose paired gain interval lies above '
           f'{c.min_gain}, the late student keeps >= {c.recovery_fraction:.0%} of it; no such '
           'regime: inconclusive. Eigenspace: the distilled linear student\'s test MSE below its '
           'teacher\'s; the coefficient ratios are shown, not deciding (gradient descent against '
           'its closed forms is a test). Gains per regime are shown, not deciding.')
  return report.make_summary(
      name='distill', title='distill: student-teacher deviations in distillation', claim=CLAIM,
      numbers=numbers, checks=checks, workdir=workdir, figures=figures, notes=notes,
      config=config, tables=[claims.diagnosis_table(config, numbers)])

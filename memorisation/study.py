"""One dataset's study: the size sweep (scores, proxies, hold-out retraining), trajectories, and
the distillation students; every array saved so any score can be recomputed without training.

    result = study.run_dataset(config, 'digits', workdir)

Per size j, workdir/<dataset>/size_<j>/ holds the ensemble's checkpoints and arrays.npz
(correct_train, correct_test: (K, N) bool of the subset models; full-model and proxy arrays);
workdir/<dataset>/masks.npz holds the masks, the (noisy) labels and which labels were flipped.
"""

from __future__ import annotations

import os
import time
from typing import Any

from absl import logging
import jax
import numpy as np

from common import ensemble
from common import mesh as mesh_lib
from common import models
from common.data import loader
from memorisation import evidence
from memorisation import proxies
from memorisation import scores as scores_lib
from memorisation import training
from memorisation import trajectories

PROXIES = ('cscore', 'loss', 'confidence', 'grad_norm', 'holdout_kl', 'learning_speed',
           'forgetting')


def flip_labels(labels: np.ndarray, fraction: float, num_classes: int, seed: int):
  """(noisy labels, flipped mask): round(fraction N) labels moved to another class uniformly."""
  if not 0.0 <= fraction < 1.0:
    raise scores_lib.MemorisationInputError(f'label_noise must lie in [0, 1), got {fraction}.')
  rng = np.random.default_rng([seed, 7])
  labels = np.asarray(labels).copy()
  flipped = np.zeros(len(labels), bool)
  idx = rng.choice(len(labels), int(round(fraction * len(labels))), replace=False)
  labels[idx] = (labels[idx] + rng.integers(1, num_classes, len(idx))) % num_classes
  flipped[idx] = True
  return labels, flipped


def size_model(ds, size):
  model_cfg = dict(ds.model)
  model_cfg[ds.size_field] = tuple(size) if isinstance(size, (tuple, list)) else size
  return model_cfg


def _size_label(size) -> str:
  return 'x'.join(str(s) for s in size) if isinstance(size, (tuple, list)) else str(size)


def load_data(config, name: str):
  ds = config.datasets[name]
  data = loader.load_splits(ds, ('train', 'test'), data_dir=config.get('data_dir'))
  train, test = dict(data['train']), dict(data['test'])
  num_classes = loader.num_classes(ds.dataset, train)
  scores_lib.check_labels(train['label'], num_classes, 'train labels')
  scores_lib.check_labels(test['label'], num_classes, 'test labels')
  train['clean_label'] = np.asarray(train['label'])
  train['label'], train['flipped'] = flip_labels(train['label'], ds.label_noise, num_classes,
                                                 config.mask_seed)
  return train, test, num_classes


def _evaluate_all(state, model, train, test):
  """Logits and input-gradient norms on the training then the test examples (one program)."""
  inputs = np.concatenate([train['inputs'], test['inputs']])
  labels = np.concatenate([train['label'], test['label']]).astype(np.int32)
  out = training.evaluate(state, model, inputs, labels)
  n = len(train['label'])
  return out.logits[:, :n], out.logits[:, n:], out.grad_norm[:, :n]


def run_size(config, name: str, j: int, model, train, test, masks, workdir) -> dict[str, Any]:
  """Trains and scores one size: K subset models + R full models, then hold-out retraining."""
  ds = config.datasets[name]
  k, n = masks.shape
  r = config.num_full_models
  weights = np.concatenate([masks, np.ones((r, n), bool)]).astype(np.float32)
  steps = training.steps_for(ds.loop.total_epochs, masks[0].sum(), ds.loop.batch_size)
  t0 = time.time()
  result = training.train_models(ds.loop, os.path.join(workdir, 'ensemble'), model, train,
                                 weights, total_steps=steps, chunk_target=config.chunk_target)
  t_train = time.time() - t0
  logits_train, logits_test, grad_norm = _evaluate_all(result.state, model, train, test)
  correct_train = ensemble.correctness(logits_train, train['label'])
  correct_test = ensemble.correctness(logits_test, test['label'])
  losses = ensemble.cross_entropy(logits_train, train['label'])
  probs = training.softmax(logits_train)
  confidence = np.take_along_axis(probs, train['label'][None, :, None], -1)[..., 0]
  trace = proxies.forgetting_stats({key: v[k:] for key, v in
                                    training.traces(result.state).items()})
  t1 = time.time()
  # Hold-out retraining: subset model k fine-tuned on the examples it did not see.
  holdout_loop = ds.loop.copy_and_resolve_references()
  with holdout_loop.unlocked():
    holdout_loop.optimizer.learning_rate = ds.holdout_learning_rate
  start = jax.tree.map(lambda a: a[:k], mesh_lib.fetch(result.state.params))
  tuned = training.train_models(
      holdout_loop, os.path.join(workdir, 'holdout'), model, train, (~masks).astype(np.float32),
      total_steps=training.steps_for(ds.holdout_epochs, (~masks[0]).sum(), ds.loop.batch_size),
      chunk_target=config.chunk_target, trace=False, start_params=start)
  tuned_logits = training.evaluate(tuned.state, model, train['inputs'], train['label'],
                                   grad_norm=False).logits
  kl = proxies.symmetric_kl(probs[:k], training.softmax(tuned_logits))      # (K, N)
  t_holdout = time.time() - t1
  s = scores_lib.memorisation(masks, correct_train[:k])
  full = slice(k, k + r)
  out = {
      'mem': s.mem, 'se': s.se, 'cscore': s.cscore, 'in_accuracy': s.in_accuracy,
      'loss': losses[full].mean(0), 'confidence': confidence[full].mean(0),
      'grad_norm': grad_norm[full].mean(0), 'holdout_kl': scores_lib.per_model_mean(masks, kl),
      'learning_speed': trace['learning_speed'].mean(0),
      'forgetting': trace['forgetting'].mean(0),
      'correct_train': correct_train[:k], 'correct_test': correct_test[:k],
      'full_correct_train': correct_train[full], 'full_correct_test': correct_test[full],
      'teacher_probs': probs[:k], 'full_probs': probs[full],
  }
  np.savez_compressed(os.path.join(workdir, 'arrays.npz'),
                      **{key: v for key, v in out.items() if not key.endswith('_probs')})
  stats = {
      'test_accuracy': float(correct_test[:k].mean()),
      'full_test_accuracy': float(correct_test[full].mean()),
      'train_accuracy_seen': float(np.mean(s.in_accuracy)),
      'full_train_accuracy': float(correct_train[full].mean()),
      'mean_mem': float(s.mem.mean()), 'mean_se': float(s.se.mean()),
      'steps': steps, 'train_seconds': round(t_train, 1), 'holdout_seconds': round(t_holdout, 1),
  }
  logging.info('%s size %d: %s', name, j, stats)
  return {'arrays': out, 'stats': stats}


def run_students(config, name, model, train, test, masks, teacher_probs, workdir):
  """Students on soft labels: student k reads row k of teacher_probs (K, N, C), the teacher of
  its own subset (the card's protocol) or a teacher trained on all the data; scores, accuracy.
  teacher_probs None: one-hot models of another initialisation seed (loop.seed + 1), the
  control whose scores are independent of the sweep that defines the trajectory classes."""
  ds = config.datasets[name]
  k, _ = masks.shape
  steps = training.steps_for(ds.loop.total_epochs, masks[0].sum(), ds.loop.batch_size)
  loop = ds.loop
  if teacher_probs is None:
    loop = ds.loop.copy_and_resolve_references()
    with loop.unlocked():
      loop.seed = ds.loop.seed + 1
    kwargs = {}
  else:
    kwargs = {'alpha': config.distill.alpha, 'tau': config.distill.tau,
              'teacher_probs': teacher_probs}
  result = training.train_models(
      loop, workdir, model, train, masks.astype(np.float32), total_steps=steps,
      chunk_target=config.chunk_target, trace=False, **kwargs)
  logits_train, logits_test, _ = _evaluate_all(result.state, model, train, test)
  correct_train = ensemble.correctness(logits_train, train['label'])
  correct_test = ensemble.correctness(logits_test, test['label'])
  s = scores_lib.memorisation(masks, correct_train)
  np.savez_compressed(os.path.join(workdir, 'arrays.npz'), correct_train=correct_train,
                      correct_test=correct_test)
  return {'mem': s.mem, 'test_accuracy': float(correct_test.mean()),
          'correct_train': correct_train, 'correct_test': correct_test}


def run_distillation(config, name, train, test, masks, per_size, classes, num_classes, workdir):
  """Students at each student size from the teacher of their own subset (the card's protocol)
  and, with distill.full_teacher, from a teacher trained on all the data (student k reads full
  model k mod R at the teacher's size); with distill.onehot_control, one-hot models of another
  seed on the same subsets; the checks' values and the diagnosis with intervals."""
  ds, d = config.datasets[name], config.distill
  teacher = per_size[d.teacher_size]
  k = masks.shape[0]
  teachers = {'subset': teacher['teacher_probs']}
  if d.full_teacher:
    full = teacher['full_probs']
    teachers['full'] = full[np.arange(k) % len(full)]
  arms = dict(teachers)
  if d.onehot_control:
    arms['control'] = None
  onehot, students = {}, {arm: {} for arm in arms}
  for j in d.student_sizes:
    label = _size_label(ds.sizes[j])
    model = models.build(size_model(ds, ds.sizes[j]), num_classes)
    onehot[label] = {key: per_size[j][key] for key in ('correct_train', 'correct_test')}
    for arm, probs in arms.items():
      suffix = '' if arm == 'subset' else f'_{arm}'
      students[arm][label] = run_students(config, name, model, train, test, masks, probs,
                                          os.path.join(workdir, f'student_{j}{suffix}'))
  draws = trajectories.model_draws(masks, config.trajectory.model_bootstrap,
                                   rng=config.mask_seed + 2)
  rng = np.random.default_rng([config.mask_seed, 3])
  num_test = len(test['label'])
  test_draws = [rng.integers(0, num_test, num_test) for _ in draws]
  t = {'correct_train': teacher['correct_train'], 'probs': teachers['subset']}
  if 'full' in teachers:
    t['full_probs'] = teachers['full']
  return {
      'teacher_size': _size_label(ds.sizes[d.teacher_size]),
      'student_sizes': list(onehot),
      'arms': list(arms),
      'evidence': evidence.distillation(masks, train['label'], train['flipped'], classes, onehot,
                                        students, t, tau=d.tau, draws=draws,
                                        test_draws=test_draws),
  }


def run_dataset(config, name: str, workdir: str) -> dict[str, Any]:
  """The sweep, trajectories, proxies and distillation of one dataset; numbers and arrays."""
  ds = config.datasets[name]
  workdir = os.path.join(workdir, name)
  os.makedirs(workdir, exist_ok=True)
  train, test, num_classes = load_data(config, name)
  n = len(train['label'])
  masks = scores_lib.check_masks(scores_lib.subset_masks(config.num_models, n, config.fraction,
                                                         config.mask_seed))
  np.savez_compressed(os.path.join(workdir, 'masks.npz'), masks=masks, label=train['label'],
                      clean_label=train['clean_label'], flipped=train['flipped'])
  start = time.time()
  per_size, stats = [], []
  for j, size in enumerate(ds.sizes):
    model = models.build(size_model(ds, size), num_classes)
    out = run_size(config, name, j, model, train, test, masks,
                   os.path.join(workdir, f'size_{j}'))
    per_size.append(out['arrays'])
    stats.append(dict(out['stats'], size=_size_label(size)))
  stack = lambda key: np.stack([p[key] for p in per_size])
  mem, se = stack('mem'), stack('se')
  tc = config.trajectory
  tol = trajectories.tolerance(se, tc.z, tc.floor)
  classes = trajectories.classify(mem, tol)
  _, lo, hi = trajectories.bootstrap_fractions(classes, tc.bootstrap, rng=config.mask_seed)
  flipped = train['flipped']
  correct_by_size = stack('correct_train')
  # The deciding evidence: models-and-examples intervals against the permutation null.
  class_ev = evidence.classes(masks, correct_by_size, flipped, z=tc.z, floor=tc.floor,
                              draws=tc.model_bootstrap, null_draws=tc.null_draws,
                              rng=config.mask_seed,
                              quantile=config.checks.class_null_quantile)
  halves = trajectories.split_half(masks, correct_by_size, tc.z, tc.floor, rng=config.mask_seed)
  proxy_values = {p: stack(p) for p in PROXIES}
  proxy_ev = evidence.proxies(mem, proxy_values, trend_ratio=config.checks.trend_ratio,
                              num_resamples=tc.proxy_bootstrap, rng=config.mask_seed)
  infl = scores_lib.influence(masks, per_size[-1]['correct_test'])
  np.savez_compressed(os.path.join(workdir, 'trajectories.npz'), mem=mem, se=se, tolerance=tol,
                      classes=classes, influence_largest=infl.astype(np.float32))
  numbers = {
      'train': n, 'test': len(test['label']), 'num_models': config.num_models,
      'sizes': [_size_label(s) for s in ds.sizes], 'per_size': stats,
      'mean_mem': mem.mean(1).tolist(),
      'mean_mem_mislabelled': mem[:, flipped].mean(1).tolist() if flipped.any() else None,
      'mean_mem_clean': mem[:, ~flipped].mean(1).tolist(),
      'mean_mem_by_class': {c: mem[:, classes == i].mean(1).tolist() if np.any(classes == i)
                            else None for i, c in enumerate(trajectories.CLASSES)},
      'tolerance_median': float(np.median(tol)),
      'class_interval_examples': {c: [float(a), float(b)] for c, a, b in
                                  zip(trajectories.CLASSES, lo, hi)},
      **class_ev,
      'split_half': halves,
      'num_mislabelled': int(flipped.sum()),
      **proxy_ev,
      'influence_largest': {'max_per_test_mean': float(infl.max(0).mean()),
                            'pairs_above_0.3': int(np.sum(infl > 0.3))},
  }
  result = {'numbers': numbers, 'mem': mem, 'classes': classes, 'train': train,
            'flipped': flipped, 'test_accuracy': [s['test_accuracy'] for s in stats]}
  if name in config.distill.datasets:
    numbers['distillation'] = run_distillation(config, name, train, test, masks, per_size, classes,
                                               num_classes, workdir)
  numbers['seconds'] = round(time.time() - start, 1)
  return result

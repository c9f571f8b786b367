"""The batch selection loop: a uniform seed set, then rounds; each round trains every run's two
models (f, g) at once with common.ensemble on the weighted selected sets, evaluates them, and
each run picks its next batch; the final models train on the whole weighted set.

    result = selection.run_selection(loop_config, workdir, model_config=..., pool=..., test=...,
                                     runs=[selection.Run(method, seed=0), ...],
                                     seed_size=300, batch_size=300, budget=2100)
    result.runs[0].logs        # per round: labels, accuracy, acceptance rate, weights, ...

Several runs (methods x seeds) go through one train_ensemble call per round, models 2j and 2j+1
being run j's f and g (they differ in initialisation and data order); each model minimises
sum_i w_i CE_i / sum_i w_i over its own selected set (weights 0 elsewhere). The selection state
(every run's indices, weights and logs) is written to workdir/selection_state.json after each
round, so a stopped run resumes at its round with the same selections; the round's ensemble
checkpoints resume a round stopped mid-training.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
import zlib
from typing import Any, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from common import classifier
from common import ensemble
from common import models
from common.data import pipeline
from iwes import checks
from iwes import methods as methods_lib
from iwes import sampling

STATE_FILE = 'selection_state.json'
MODEL_AXIS = 'model'  # the mesh axis every round's models spread over


class SelectionStateError(ValueError):
  """A saved selection state that belongs to another run (the fields that differ are named)."""


@dataclasses.dataclass(frozen=True)
class Run:
  method: methods_lib.Method
  seed: int

  @property
  def name(self) -> str:
    return f'{self.method.name}/seed{self.seed}'


@dataclasses.dataclass
class RunState:
  """One run's selection so far: pool indices in the order picked, their weights, logs."""
  indices: list[int]
  weights: list[float]
  logs: list[dict[str, Any]]
  extra: dict[str, Any]


@dataclasses.dataclass
class SelectionResult:
  runs: list[Run]
  states: list[RunState]
  rounds: int
  finished: bool

  def accuracy_curve(self, j: int) -> tuple[np.ndarray, np.ndarray]:
    """(labels, test accuracy) of run j at each round and at the end."""
    logs = self.states[j].logs
    return (np.array([r['labels'] for r in logs]), np.array([r['accuracy'] for r in logs]))


# ---------------------------------------------------------------------------------------------
# Inputs.
# ---------------------------------------------------------------------------------------------
def _check_arrays(arrays, name: str) -> int:
  if not isinstance(arrays, dict) or set(arrays) < {'inputs', 'label'}:
    raise checks.IwesInputError(f'{name} must be a dict with "inputs" and "label".')
  n = len(arrays['label'])
  if len(arrays['inputs']) != n:
    raise checks.IwesInputError(f'{name}: {len(arrays["inputs"])} inputs but {n} labels.')
  if not np.issubdtype(np.asarray(arrays['label']).dtype, np.integer):
    raise checks.IwesInputError(f'{name}["label"] must be integer class ids.')
  return n


def seed_set(pool_size: int, seed_size: int, seed: int) -> np.ndarray:
  """The uniform seed set of a seed (shared by every method run with that seed)."""
  return np.random.default_rng([seed, 0]).choice(pool_size, seed_size, replace=False)


def round_rng(run: Run, round_index: int) -> np.random.Generator:
  """The selection randomness of a run's round: a pure function of (seed, round, method name),
  so a resumed run draws what an uninterrupted one would."""
  return np.random.default_rng([run.seed, 1 + round_index, zlib.crc32(run.method.name.encode())])


# ---------------------------------------------------------------------------------------------
# Training and evaluation of every run's pair.
# ---------------------------------------------------------------------------------------------
def per_example_loss(model):
  """Each example's cross-entropy under `model` (common.ensemble weights and averages it)."""
  def loss_fn(params, model_state, batch, rng):
    logits, new_state = classifier.apply_in_training(model, params, model_state,
                                                     batch['inputs'], rng)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch['label'])
    return losses, ({}, new_state)
  return loss_fn


def train_pairs(loop_config, workdir: str, model, pool: dict[str, np.ndarray],
                weights: np.ndarray, chunk_size: int = 0) -> ensemble.EnsembleResult:
  """Trains M = len(weights) models at once, model m on the pool weighted by weights[m].

  chunk_size: models per device in one dispatch of the ensemble step (0: common.ensemble's own
  choice); on CPU the result does not depend on it."""
  config = loop_config.copy_and_resolve_references()
  with config.unlocked():
    config.ensemble = ml_collections.ConfigDict({'num_models': len(weights),
                                                 'model_axis': MODEL_AXIS,
                                                 'chunk_size': chunk_size})
  x0 = np.asarray(pool['inputs'][:1])
  arrays = {'inputs': np.asarray(pool['inputs']), 'label': np.asarray(pool['label'], np.int32)}
  return ensemble.train_ensemble(
      config, workdir, init_fn=lambda rng: model.init(rng, x0, train=False),
      loss_fn=per_example_loss(model), arrays=arrays, weights=weights.astype(np.float32),
      num_classes=getattr(model, 'num_outputs', None))


def _outputs(logits, labels) -> tuple[np.ndarray, np.ndarray]:
  """(M, N, C) probabilities and (M, N) log-probabilities of the labels, from logits."""
  logits = jnp.asarray(logits, jnp.float32)
  probs = np.asarray(jax.nn.softmax(logits, axis=-1), np.float64)
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  label_log_probs = jnp.take_along_axis(log_probs, jnp.asarray(labels)[None, :, None], -1)
  return probs, np.asarray(label_log_probs[..., 0], np.float64)


def loss_diagnosis(weights, losses) -> dict[str, float]:
  """What a weighted set does to the loss a round's models minimise: the effective sample size
  as a fraction of the set, the variance factor of the weighted mean loss (sampling.py), and
  the weighted mean loss over the plain mean (below 1 when the large weights sit on examples
  with small losses)."""
  n = len(weights)
  return {'set_ess_fraction': sampling.effective_sample_size(weights) / n,
          'loss_variance_factor': sampling.loss_variance_factor(weights, losses),
          'loss_weighted': float(np.sum(np.multiply(weights, losses)) / np.sum(weights)),
          'loss_unweighted': float(np.mean(losses)),
          # below 1: the weights move the loss onto examples the model already fits
          'loss_weighted_ratio': float(np.sum(np.multiply(weights, losses)) / np.sum(weights)
                                       / max(float(np.mean(losses)), 1e-12))}


def _models(state: ensemble.EnsembleState, ids: Sequence[int]) -> ensemble.EnsembleState:
  ids = np.asarray(ids)
  take = lambda a: a[ids]
  return state.replace(params=jax.tree.map(take, state.params),
                       model_state=jax.tree.map(take, state.model_state))


def predict_program(apply_fn, mesh: jax.sharding.Mesh):
  """common.ensemble's prediction program over this mesh's 'model' axis: each device runs only
  its own models of a group."""
  return ensemble.predict_program(apply_fn, mesh, MODEL_AXIS)


def predict(result: ensemble.EnsembleResult, apply_fn, inputs: np.ndarray, ids: Sequence[int],
            chunk_size: int = 0, batch_size: int = 1024) -> np.ndarray:
  """(len(ids), N, ...) outputs of the models `ids` on `inputs` (batches of batch_size), in
  groups of the training step's dispatch: chunk_size models per device (0: all of them at
  once). Each group is a gathered copy of its models' variables (padded to a whole number per
  device), run by predict_program."""
  ids = [int(i) for i in ids]
  inputs = np.asarray(inputs)
  if not ids or not len(inputs):
    raise checks.IwesInputError(f'predict got {len(ids)} models and {len(inputs)} inputs.')
  ways = dict(result.mesh.shape).get(MODEL_AXIS, 1)
  group = chunk_size * ways if chunk_size else -(-len(ids) // ways) * ways
  program = predict_program(apply_fn, result.mesh)
  outs = []
  for lo in range(0, len(ids), group):
    part = ids[lo:lo + group]
    if part == list(range(result.num_models)):
      state = result.state  # every model, in order: the state itself, no copy
    else:
      state = _models(result.state, part + part[-1:] * (-len(part) % ways))
    variables = {'params': state.params, **state.model_state}
    outs.append(ensemble.predict_batches(program, variables, inputs, batch_size)[:len(part)])
  return np.concatenate(outs)


# ---------------------------------------------------------------------------------------------
# The state file.
# ---------------------------------------------------------------------------------------------
def _identity(runs, loop_config, model_config, pool, seed_size, batch_size, budget, valid=None):
  extra = {} if valid is None else {'valid': pipeline.digest(np.asarray(valid['inputs']))}
  return json.loads(json.dumps({**extra,
      'runs': [[r.name, dataclasses.asdict(r.method)] for r in runs],
      'loop': loop_config.to_dict(), 'model': dict(model_config),
      'pool': pipeline.digest(np.asarray(pool['inputs'])),
      'labels': pipeline.digest(np.asarray(pool['label'])),
      'sizes': [seed_size, batch_size, budget]}, default=str))


def _save(path: str, record: dict[str, Any]) -> None:
  if jax.process_index() != 0:
    return
  tmp = path + '.tmp'
  with open(tmp, 'w', encoding='utf-8') as f:
    json.dump(record, f)
  os.replace(tmp, path)


def _jsonable_extra(extra):
  return {k: (np.asarray(v).tolist() if isinstance(v, np.ndarray) else v)
          for k, v in extra.items()}


def _load(path: str, identity) -> dict[str, Any] | None:
  if not os.path.exists(path):
    return None
  with open(path, encoding='utf-8') as f:
    record = json.load(f)
  if record['identity'] != identity:
    old, new = record['identity'], identity
    differ = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    raise SelectionStateError(
        f'{path} holds a selection made under other settings (they differ in {differ}); use a '
        'fresh workdir, or delete the file to start over.')
  return record


# ---------------------------------------------------------------------------------------------
# The loop.
# ---------------------------------------------------------------------------------------------
def run_selection(loop_config: ml_collections.ConfigDict, workdir: str, *,
                  model_config, pool: dict[str, np.ndarray], test: dict[str, np.ndarray],
                  runs: Sequence[Run], seed_size: int, batch_size: int, budget: int,
                  valid: dict[str, np.ndarray] | None = None,
                  num_classes: int | None = None, chunk_size: int = 0,
                  keep_round_checkpoints: bool = False,
                  stop_after_round: int | None = None) -> SelectionResult:
  """Runs every run's selection to `budget` labels (see the module docstring).

  loop_config: common.ensemble's loop fields (seed, batch_size, total_steps | total_epochs,
  optimizer, ...) for every round's models. chunk_size: models per device in one dispatch of
  the ensemble step (0: common.ensemble's choice; on CPU the result does not depend on it); the
  models score the test, validation and pool examples in the same groups (`predict`).
  stop_after_round: return once that many rounds are saved (a stopped run; calling again
  resumes it). valid: a validation split (held out of the
  pool) every round's models are also scored on (`accuracy_valid` in the logs), for settings
  chosen without the test split.
  """
  # Checks before any compute.
  n_pool = _check_arrays(pool, 'pool')
  _check_arrays(test, 'test')
  if valid is not None:
    _check_arrays(valid, 'valid')
  rounds = checks.check_sizes(n_pool, seed_size, batch_size, budget)
  runs = list(runs)
  if not runs:
    raise checks.IwesInputError('runs is empty: nothing to select for.')
  names = [r.name for r in runs]
  if len(set(names)) != len(names):
    raise checks.IwesInputError(f'Runs repeat: {sorted({n for n in names if names.count(n) > 1})}.')
  if seed_size < loop_config.batch_size:
    raise checks.IwesInputError(f'The seed set ({seed_size}) is smaller than the training batch '
                                f'({loop_config.batch_size}): lower loop.batch_size.')
  labels = np.asarray(pool['label']).astype(np.int64)
  num_classes = num_classes or int(max(labels.max(), np.max(test['label'])) + 1)
  model = models.build(model_config, num_classes)

  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, STATE_FILE)
  identity = _identity(runs, loop_config, model_config, pool, seed_size, batch_size, budget,
                       valid)
  record = _load(path, identity)
  if record is None:
    states = []
    for run in runs:
      idx = seed_set(n_pool, seed_size, run.seed)
      states.append(RunState(indices=idx.tolist(), weights=[1.0] * seed_size, logs=[], extra={}))
    start, finished = 0, False
  else:
    states = [RunState(**s) for s in record['states']]
    for s in states:
      s.extra = {k: np.asarray(v) for k, v in s.extra.items()}
    start, finished = record['round'], record['finished']
    logging.info('Resumed the selection at round %d of %d from %s.', start, rounds, path)

  def save(round_done, done):
    _save(path, {'identity': identity, 'round': round_done, 'finished': done,
                 'states': [dict(dataclasses.asdict(s), extra=_jsonable_extra(s.extra))
                            for s in states]})

  def weights_matrix():
    w = np.zeros((2 * len(runs), n_pool), np.float32)
    for j, s in enumerate(states):
      w[2 * j, s.indices] = s.weights
      w[2 * j + 1, s.indices] = s.weights
    return w

  apply_logits = lambda v, x: model.apply(v, x, train=False)
  apply_features = lambda v, x: model.apply(v, x, train=False, return_features=True)[1]

  def train_and_score(round_dir):
    result = train_pairs(loop_config, round_dir, model, pool, weights_matrix(), chunk_size)
    accuracy = {}
    for split, arrays in (('test', test), ('valid', valid)):
      if arrays is not None:
        logits = predict(result, apply_logits, arrays['inputs'], range(2 * len(runs)),
                         chunk_size)
        accuracy[split] = ensemble.correctness(logits, np.asarray(arrays['label'])).mean(1)
    return result, accuracy

  def accuracy_log(j, accuracy, round_index):
    acc = accuracy['test']
    log = {'round': round_index, 'labels': len(states[j].indices),
           'accuracy': float((acc[2 * j] + acc[2 * j + 1]) / 2),
           'accuracy_f': float(acc[2 * j]), 'accuracy_g': float(acc[2 * j + 1]),
           'weight_sum': float(np.sum(states[j].weights)),
           'ess_fraction': sampling.effective_sample_size(states[j].weights)
                           / len(states[j].weights)}
    if 'valid' in accuracy:
      log['accuracy_valid'] = float((accuracy['valid'][2 * j] + accuracy['valid'][2 * j + 1]) / 2)
    return log

  if record is None:
    save(0, False)
  for r in range(start, rounds):
    if stop_after_round is not None and r >= stop_after_round:
      return SelectionResult(runs=runs, states=states, rounds=rounds, finished=False)
    round_dir = os.path.join(workdir, 'rounds', f'round_{r}')
    t0 = time.perf_counter()
    result, acc = train_and_score(round_dir)
    t1 = time.perf_counter()
    # Pool outputs of the models a method reads: f for all but uniform, g for the disagreements.
    need = sorted({2 * j + m for j, run in enumerate(runs)
                   for m in methods_lib.models_read(run.method)})
    probs, label_log_probs = {}, {}
    if need:
      out, label_lp = _outputs(predict(result, apply_logits, pool['inputs'], need, chunk_size),
                               labels)
      probs, label_log_probs = dict(zip(need, out)), dict(zip(need, label_lp))
    want = [j for j, run in enumerate(runs) if run.method.kind in methods_lib.NEEDS_FEATURES]
    features = {}
    if want:
      feats = predict(result, apply_features, pool['inputs'], [2 * j for j in want],
                      chunk_size)
      features = dict(zip(want, feats))
    t2 = time.perf_counter()
    for j, run in enumerate(runs):
      s = states[j]
      selected = np.zeros(n_pool, bool)
      selected[s.indices] = True
      view = methods_lib.RoundView(labels=labels, probs_f=probs.get(2 * j),
                                   probs_g=probs.get(2 * j + 1), selected=selected,
                                   features_f=lambda j=j: features[j], extra=s.extra)
      picked = methods_lib.select(run.method, view, batch_size, round_rng(run, r))
      log = accuracy_log(j, acc, r)
      if run.method.kind == 'iwes':  # the weighted set this round's f minimised its loss on
        log.update(loss_diagnosis(np.asarray(s.weights), -label_log_probs[2 * j][s.indices]))
      log.update(picked.log)
      s.logs.append(log)
      s.indices.extend(int(i) for i in picked.indices)
      s.weights.extend(float(w) for w in picked.weights)
    t3 = time.perf_counter()
    logging.info('Round %d/%d: %d labels (train %.1f s, pool outputs %.1f s, selection %.1f s); '
                 'accuracy %s', r + 1, rounds, len(states[0].indices), t1 - t0, t2 - t1,
                 t3 - t2, {run.name: round(states[j].logs[-1]['accuracy'], 3)
                           for j, run in enumerate(runs)})
    save(r + 1, False)
    if not keep_round_checkpoints and jax.process_index() == 0:
      shutil.rmtree(os.path.join(round_dir, 'checkpoints'), ignore_errors=True)
  if not finished:  # the final models, on the whole weighted set
    final_dir = os.path.join(workdir, 'rounds', 'final')
    _, acc = train_and_score(final_dir)
    for j in range(len(runs)):
      states[j].logs.append(accuracy_log(j, acc, rounds))
    save(rounds, True)
    if not keep_round_checkpoints and jax.process_index() == 0:
      shutil.rmtree(os.path.join(final_dir, 'checkpoints'), ignore_errors=True)
  return SelectionResult(runs=runs, states=states, rounds=rounds, finished=True)

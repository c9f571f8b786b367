"""Many models of one architecture trained as one: copies with their own parameters, state,
augmentation draws, teacher and loss weights, in one run of the common loop.

The experiment trains every seed and every kind of student of a regime at once: copy c has its
own initialisation, its own augmentation of the shared batch, its own teacher (a copy of the
teacher run) and its own schedule (one-hot: alpha 1; distilled: alpha from step 0; late: alpha
from switch_steps[c]). The parameters of different copies never meet (the loss is the sum of the
copies' mean losses and Adam is elementwise), so each copy trains as it would alone, except that
all copies see the same batches in the same order: comparisons between copies are paired.
One run compiles one step, where separate runs would compile one each (on a 2-core CPU a step's
compile costs more than its training).

    model = copies.make(models.build(config.model, 10), num_copies=9)    # (M, B, ...) -> (M, B, C)
    loss_fn = copies.make_loss_fn(model, num_classes=10, teacher=teacher, alphas=..., ...)
"""

from __future__ import annotations

import functools
import json
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from common import config_lib
from common import mesh as mesh_lib
from common import models
from common import train as train_lib
from common.data import pipeline
from distill import loss as loss_lib
from distill import training
from distill.teacher import STEP_COLLECTION
from distill.teacher import Teacher


class _Positional(nn.Module):
  """`model(x, train=train)` with `train` positional: flax's vmap drops keyword arguments (it
  would silently run a batch-norm model in inference mode while training)."""
  model: nn.Module

  def __call__(self, x, train):
    return self.model(x, train=train)


class _Copies(nn.Module):
  """Inputs (M, B, ...) -> logits (M, B, C) of M copies of `model` (see `make`)."""
  model: nn.Module
  num_copies: int

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    vmapped = nn.vmap(_Positional, variable_axes={'params': 0, 'batch_stats': 0},
                      split_rngs={'params': True, 'dropout': True}, in_axes=(0, None),
                      out_axes=0, axis_size=self.num_copies,
                      metadata_params={nn.PARTITION_NAME: None})
    return vmapped(self.model, name='copies')(x, train)


def make(model: nn.Module, num_copies: int) -> nn.Module:
  """`num_copies` independent copies of `model`: inputs (M, B, ...) -> logits (M, B, C).

  The copy axis leads every parameter and batch statistic; its logical axis is None (replicated,
  or sharded by nothing), the model's own axes follow. `num_outputs` is the model's.
  """
  if isinstance(num_copies, bool) or not isinstance(num_copies, (int, np.integer)) \
      or num_copies < 1:
    raise loss_lib.DistillError(f'num_copies must be a whole number >= 1, got {num_copies!r}.')
  return _Copies(model=model, num_copies=int(num_copies))


def build(model_config, num_classes: int, num_copies: int) -> nn.Module:
  return make(models.build(model_config, num_classes), num_copies)


def select(variables: dict[str, Any], index: Sequence[int]) -> dict[str, Any]:
  """The variables of copies `index` (in that order, repeats allowed): a new stack of copies."""
  index = np.asarray(index, np.int32)
  return jax.tree.map(lambda a: jnp.asarray(a)[index], variables)


def make_loss_fn(model: nn.Module, *, num_copies: int, num_classes: int,
                 teacher: Teacher | None = None, alphas: Sequence[float] | None = None,
                 switch_steps: Sequence[int] | None = None, tau: float = 1.0,
                 augment: training.Augment | None = None):
  """loss_fn(params, model_state, batch, rng) -> (sum over copies of their mean losses, ...).

  teacher: a Teacher over the same number of copies ((M, B, ...) -> (M, B, C)), copy c teaching
  student copy c on the student's augmented inputs; None trains every copy on one-hot labels.
  alphas (M,): each copy's weight on the one-hot term once distilling; switch_steps (M,): the step
  from which it distils (before it: one-hot).
  """
  loss_lib.check_tau(tau)
  alphas = np.ones(num_copies) if alphas is None else np.asarray(alphas, np.float32)
  switch_steps = (np.zeros(num_copies, np.int32) if switch_steps is None
                  else np.asarray(switch_steps))
  if alphas.shape != (num_copies,) or switch_steps.shape != (num_copies,):
    raise loss_lib.DistillError(f'alphas and switch_steps need one entry per copy ({num_copies}); '
                                f'got shapes {alphas.shape} and {switch_steps.shape}.')
  for a in alphas:
    loss_lib.check_alpha(float(a))
  if not np.issubdtype(switch_steps.dtype, np.integer) or switch_steps.min() < 0:
    raise loss_lib.DistillError(f'switch_steps must be whole numbers >= 0, got {switch_steps}.')
  if teacher is not None and teacher.num_classes != num_classes:
    raise loss_lib.DistillError(f'The teacher ({teacher.description}) predicts '
                                f'{teacher.num_classes} classes but the data has {num_classes}.')
  alphas_dev, switch_dev = jnp.asarray(alphas), jnp.asarray(switch_steps, jnp.int32)

  def loss_fn(params, model_state, batch, rng):
    step = model_state[STEP_COLLECTION]['step']
    rest = {k: v for k, v in model_state.items() if k != STEP_COLLECTION}
    x = jnp.broadcast_to(batch['inputs'], (num_copies,) + batch['inputs'].shape)
    if augment is not None:  # each copy its own draw
      x = jax.vmap(augment)(jax.random.split(rng, num_copies), x)
    mutable = list(rest.keys())
    out = model.apply({'params': params, **rest}, x, train=True,
                      rngs={'dropout': jax.random.fold_in(rng, 1)}, mutable=mutable or False)
    logits, new_rest = out if mutable else (out, rest)
    labels = batch['label']
    if teacher is None:
      losses = jax.vmap(loss_lib.cross_entropy, in_axes=(0, None))(logits, labels)
    else:
      teacher_logits = jax.lax.stop_gradient(teacher.logits(x))
      weights = jnp.where(step < switch_dev, 1.0, alphas_dev)
      losses = jax.vmap(lambda s, t, a: loss_lib.distillation_loss(s, labels, t, alpha=a,
                                                                   tau=tau))(
          logits, teacher_logits, weights)
    per_copy = jnp.mean(losses, axis=1)                                    # (M,)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == labels[None, :], axis=1)
    metrics = {'accuracy': jnp.mean(accuracy), 'loss_per_copy_max': jnp.max(per_copy)}
    new_state = {**dict(new_rest), STEP_COLLECTION: {'step': step + 1}}
    return jnp.sum(per_copy), (metrics, new_state)

  return loss_fn


def train(loop: ml_collections.ConfigDict, workdir: str, *, model_config, num_copies: int,
          arrays: dict[str, np.ndarray], num_classes: int, teacher: Teacher | None = None,
          alphas: Sequence[float] | None = None, switch_steps: Sequence[int] | None = None,
          tau: float = 1.0, augment=None, identity: dict[str, Any] | None = None):
  """Trains the copies with the common loop; returns (copies model, variables, TrainResult).

  Everything that decides the result beyond the loop's fields (model, copies, teacher, weights,
  augmentation, `identity`) goes into the run's identity, so a rerun reuses only the same run.
  """
  config_lib.check_loop(loop)
  labels = np.asarray(arrays['label'])
  if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
    raise loss_lib.DistillError(f'Training labels must be (N,) class ids, got {labels.dtype} '
                                f'{labels.shape}.')
  if labels.min() < 0 or labels.max() >= num_classes:
    raise loss_lib.DistillError(f'Training labels must be in [0, {num_classes}); got '
                                f'{labels.min()}..{labels.max()}.')
  model = build(model_config, num_classes, num_copies)
  sample = np.broadcast_to(np.asarray(arrays['inputs'][:8], np.float32),
                           (num_copies,) + np.shape(arrays['inputs'][:8]))
  run_identity = {
      'model': model_config.to_dict() if hasattr(model_config, 'to_dict') else dict(model_config),
      'num_copies': int(num_copies), 'num_classes': int(num_classes),
      'augment': dict(augment or {}), 'tau': float(tau),
      'alphas': [float(a) for a in (alphas if alphas is not None else [1.0] * num_copies)],
      'switch_steps': [int(s) for s in (switch_steps if switch_steps is not None
                                        else [0] * num_copies)],
      **(identity or {})}
  if teacher is not None:
    teacher.check(sample, num_classes)
    run_identity['teacher'] = training.teacher_fingerprint(teacher, sample)
  loss_fn = make_loss_fn(model, num_copies=num_copies, num_classes=num_classes, teacher=teacher,
                         alphas=alphas, switch_steps=switch_steps, tau=tau,
                         augment=training.augment_fn(augment))
  x0 = jnp.zeros((num_copies, 1) + np.shape(arrays['inputs'])[1:], jnp.float32)
  init_fn = training.with_step_counter(lambda rng: model.init(rng, x0, train=False))
  result = train_lib.train(loop, workdir, init_fn=init_fn, loss_fn=loss_fn,
                           train_iter=pipeline.BatchIterator(arrays, loop.batch_size,
                                                             seed=loop.seed),
                           mesh=mesh_lib.mesh_from_config(loop), identity=run_identity)
  state = result.state
  variables = {'params': state.params,
               **{k: v for k, v in state.model_state.items() if k != STEP_COLLECTION}}
  return model, variables, result


@functools.lru_cache(maxsize=8)
def _predictor(model_json: str, num_classes: int, num_copies: int):
  """One jitted apply per (architecture, copies): one compile per input shape."""
  model = build(ml_collections.ConfigDict(json.loads(model_json)), num_classes, num_copies)

  def apply(variables, x):
    return model.apply(variables, jnp.broadcast_to(x, (num_copies,) + x.shape), train=False)

  return jax.jit(apply)


def probabilities(model_config, variables: dict[str, Any], inputs: np.ndarray, *,
                  num_classes: int, num_copies: int, batch_size: int = 1024) -> np.ndarray:
  """(M, N, C) float64 softmax outputs of every copy on every input (batches padded to one
  compiled shape)."""
  config = model_config.to_dict() if hasattr(model_config, 'to_dict') else dict(model_config)
  apply = _predictor(json.dumps(config, sort_keys=True), num_classes, num_copies)
  outs = []
  for i in range(0, len(inputs), batch_size):
    chunk = np.asarray(inputs[i:i + batch_size], np.float32)
    pad = batch_size - len(chunk) if len(inputs) > batch_size else 0
    if pad:
      chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
    outs.append(np.asarray(apply(variables, chunk))[:, :len(chunk) - pad])
  logits = np.concatenate(outs, axis=1).astype(np.float64)
  logits -= logits.max(-1, keepdims=True)
  p = np.exp(logits)
  return p / p.sum(-1, keepdims=True)

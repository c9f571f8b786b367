"""One ensemble per model size: the K subset models (and R full-data models) trained at once.

    run = training.train_models(loop_config, workdir, model, arrays, weights, total_steps=...)
    out = training.evaluate(run.state, model, inputs, labels)   # logits (M, N, C), grad norms

Built on common.ensemble.train_ensemble. What it adds:
- a per-example training trace inside each model's state (Toneva et al.'s forgetting events and
  learning speed, measured on the minibatch where each example is presented): presentations,
  correct presentations, the last outcome and the count of correct -> wrong transitions, all (N,)
  per model;
- a per-model teacher for distillation: student k reads teacher k's probabilities, which the
  ensemble carries in its batch (model_arrays; teacher k saw only subset k, so teacher + student
  is one algorithm);
- fine-tuning from trained parameters (hold-out retraining: the ensemble's init_params).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import scipy.special

from common import config_lib
from common import ensemble
from common import mesh as mesh_lib
from distill import loss as distill_loss

# The model_state collection this package adds (the model never sees it), and the batch field of
# a student's own teacher's probabilities.
TRACE = 'trace'
TEACHER_PROBS = 'teacher_probs'


def _model_vars(model_state):
  return {k: v for k, v in model_state.items() if k != TRACE}


def make_init_fn(model: nn.Module, x0, num_examples: int, *, trace: bool = True,
                 params: bool = True) -> Callable[[jax.Array], Any] | None:
  """init_fn(rng) for train_ensemble: the model's variables (params=False: none, when the
  ensemble's init_params give them) plus the training trace (None when there is nothing)."""
  if not params and not trace:
    return None

  def init_fn(rng):
    variables = dict(nn.meta.unbox(model.init(rng, x0))) if params else {}
    if trace:
      zeros = jnp.zeros((num_examples,), jnp.float32)
      variables[TRACE] = {'presented': zeros, 'correct': zeros, 'last': zeros,
                          'forgets': zeros}
    return variables

  return init_fn


def _update_trace(trace, index, correct):
  """Toneva et al.: a forgetting event is a presentation wrong after a correct one."""
  c = correct.astype(jnp.float32)
  forgot = trace['last'][index] * (1.0 - c)
  return {'presented': trace['presented'].at[index].add(1.0),
          'correct': trace['correct'].at[index].add(c),
          'last': trace['last'].at[index].set(c),
          'forgets': trace['forgets'].at[index].add(forgot)}


def check_distillation(alpha, tau) -> None:
  """alpha in [0, 1] (the one-hot term's weight) and tau > 0 (the temperature), finite."""
  number = lambda v: isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
  if not number(alpha) or not math.isfinite(alpha) or not 0.0 <= alpha <= 1.0:
    raise config_lib.ConfigError(
        f'alpha={alpha!r}: expected a number in [0, 1] (the one-hot term\'s weight: 1 trains on '
        'the labels only, 0 on the teacher only; config: distill.alpha).')
  if not number(tau) or not math.isfinite(tau) or tau <= 0:
    raise config_lib.ConfigError(f'tau={tau!r}: expected a finite number > 0 (the softmax '
                                 'temperature of the soft term; config: distill.tau).')


def make_loss_fn(model: nn.Module, *, alpha: float = 1.0, tau: float = 1.0):
  """Per-example loss for train_ensemble. alpha = 1: one-hot cross-entropy; alpha < 1:
  distill.distillation_loss against the teacher probabilities in the model's batch
  (batch['teacher_probs'], the model's own teacher). alpha in [0, 1] and tau > 0 are checked."""
  check_distillation(alpha, tau)

  def loss_fn(params, model_state, batch, rng):
    del rng
    logits = model.apply({'params': params, **_model_vars(model_state)}, batch['inputs'])
    if alpha < 1.0:
      losses = distill_loss.distillation_loss(logits, batch['label'],
                                              teacher_probs=batch[TEACHER_PROBS], alpha=alpha,
                                              tau=tau)
    else:
      losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch['label'])
    new_state = dict(model_state)
    if TRACE in model_state:
      correct = jax.lax.stop_gradient(jnp.argmax(logits, -1) == batch['label'])
      new_state[TRACE] = _update_trace(model_state[TRACE], batch['index'], correct)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch['label'])
    return losses, ({'accuracy': accuracy}, new_state)

  return loss_fn


def run_config(loop_config: ml_collections.ConfigDict, num_models: int, total_steps: int,
               chunk_size: int) -> ml_collections.ConfigDict:
  """The loop config of one ensemble: its length in steps and its ensemble section."""
  config = loop_config.copy_and_resolve_references()
  with config.unlocked():
    config.total_steps = int(total_steps)
    config.total_epochs = None
    config.ensemble = ml_collections.ConfigDict({'num_models': num_models, 'model_axis': 'model',
                                                 'chunk_size': chunk_size})
  return config


def steps_for(epochs: float, num_seen: int, batch_size: int) -> int:
  return max(1, int(round(epochs * num_seen / batch_size)))


def train_models(loop_config, workdir: str, model: nn.Module, arrays: dict[str, np.ndarray],
                 weights: np.ndarray, *, total_steps: int, chunk_target: int = 0,
                 alpha: float = 1.0, tau: float = 1.0, trace: bool = True,
                 teacher_probs=None, start_params=None) -> ensemble.EnsembleResult:
  """Trains len(weights) models at once, model m on the examples with weights[m] > 0.

  arrays: {'inputs', 'label'} (an 'index' is added; labels are checked against the model's
  outputs). chunk_target: models per device per dispatch (common.ensemble's chunk_size; 0: its
  own choice; the result does not depend on it on CPU). teacher_probs (M, N, C): student m learns
  from row m (alpha < 1). start_params (every leaf (M, ...)): model m starts from row m.
  """
  num_models, n = weights.shape
  check_distillation(alpha, tau)
  if alpha < 1.0 and teacher_probs is None:
    raise config_lib.ConfigError(f'alpha={alpha} distils from a teacher: pass teacher_probs '
                                 '(M, N, classes).')
  arrays = {'inputs': np.asarray(arrays['inputs'], np.float32),
            'label': np.asarray(arrays['label'], np.int32),
            'index': np.arange(n, dtype=np.int32)}
  model_arrays = {}
  if teacher_probs is not None:
    model_arrays[TEACHER_PROBS] = np.asarray(teacher_probs, np.float32)
  init_fn = make_init_fn(model, arrays['inputs'][:1], n, trace=trace,
                         params=start_params is None)
  config = run_config(loop_config, num_models, total_steps, max(int(chunk_target), 0))
  return ensemble.train_ensemble(
      config, workdir, init_fn=init_fn, loss_fn=make_loss_fn(model, alpha=alpha, tau=tau),
      arrays=arrays, weights=weights.astype(np.float32), model_arrays=model_arrays,
      init_params=start_params, num_classes=getattr(model, 'num_outputs', None))


@dataclasses.dataclass
class Evaluation:
  logits: np.ndarray        # (M, N, C)
  grad_norm: np.ndarray     # (M, N) ||d CE(f(x), y) / dx||


def evaluate(state: ensemble.EnsembleState, model: nn.Module, inputs, labels, *,
             batch_size: int = 512, grad_norm: bool = True) -> Evaluation:
  """Every model's logits and input-gradient norm on every example (one compiled program)."""
  inputs = np.asarray(inputs, np.float32)
  labels = np.asarray(labels, np.int32)
  variables = {'params': state.params, **_model_vars(state.model_state)}

  def one(v, x, y):
    logits = model.apply(v, x)
    if not grad_norm:
      return logits, jnp.zeros(x.shape[:1])
    ce = lambda xx: jnp.sum(optax.softmax_cross_entropy_with_integer_labels(model.apply(v, xx), y))
    g = jax.grad(ce)(x)
    return logits, jnp.sqrt(jnp.sum(g.reshape(g.shape[0], -1) ** 2, axis=-1))

  fn = jax.jit(jax.vmap(one, in_axes=(0, None, None)))
  n = len(inputs)
  size = min(batch_size, n)
  logits, norms = [], []
  for i in range(0, n, size):
    x, y = inputs[i:i + size], labels[i:i + size]
    pad = size - len(x)
    if pad:
      x = np.concatenate([x, np.repeat(x[-1:], pad, 0)])
      y = np.concatenate([y, np.repeat(y[-1:], pad, 0)])
    out_logits, out_norm = mesh_lib.fetch(fn(variables, x, y))
    logits.append(np.asarray(out_logits)[:, :size - pad])
    norms.append(np.asarray(out_norm)[:, :size - pad])
  return Evaluation(logits=np.concatenate(logits, 1), grad_norm=np.concatenate(norms, 1))


def traces(state: ensemble.EnsembleState) -> dict[str, np.ndarray]:
  """The per-example training trace of every model: {name: (M, N)}."""
  return {k: mesh_lib.fetch(v) for k, v in state.model_state[TRACE].items()}


def softmax(logits) -> np.ndarray:
  return scipy.special.softmax(np.asarray(logits, np.float64), axis=-1)

"""One ensemble per model size: the K subset models (and R full-data models) trained at once.

    run = training.train_models(loop_config, workdir, model, arrays, weights, chunk_target=24)
    out = training.evaluate(run.state, model, inputs, labels)   # logits (M, N, C), grad norms

Built on common.ensemble.train_ensemble. What it adds, inside the models' own state:
- a per-example training trace (Toneva et al.'s forgetting events and learning speed, measured on
  the minibatch where each example is presented): presentations, correct presentations, the last
  outcome and the count of correct -> wrong transitions, all (N,) per model;
- a per-model teacher for distillation: model k's student reads teacher k's probabilities, which
  it carries in its state (teacher k saw only subset k, so teacher + student is one algorithm);
- fine-tuning from trained parameters (hold-out retraining).
The ensemble hands init_fn only model m's key, fold_in(key(seed), m) (its documented contract);
`model_index` recovers m from it by matching against the table of those keys, so per-model
inputs can be selected without a model index from common.ensemble.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from common import ensemble
from distill import loss as distill_loss

# model_state collections this package adds (the model never sees them).
TRACE, TEACHER = 'trace', 'teacher'
OWN = (TRACE, TEACHER)


def key_table(seed: int, num_models: int) -> np.ndarray:
  """(M, key words) raw data of each model's init key fold_in(key(seed), m)."""
  base = jax.random.key(seed)
  keys = jax.vmap(lambda m: jax.random.fold_in(base, m))(jnp.arange(num_models))
  return np.asarray(jax.random.key_data(keys))


def model_index(rng, table) -> jax.Array:
  """The m whose init key is `rng` (traceable; 0 when none matches)."""
  match = jnp.all(jax.random.key_data(rng)[None, :] == jnp.asarray(table), axis=-1)
  return jnp.argmax(match)


def _model_vars(model_state):
  return {k: v for k, v in model_state.items() if k not in OWN}


def make_init_fn(model: nn.Module, x0, num_examples: int, *, trace: bool = True,
                 seed: int = 0, num_models: int = 0, teacher_probs=None,
                 start_params=None) -> Callable[[jax.Array], Any]:
  """init_fn(rng) for train_ensemble: the model's variables plus this package's collections.

  teacher_probs (M, N, C): model m carries row m (its teacher's probabilities on every training
  example); start_params (every leaf (M, ...)): model m starts from them (fine-tuning). Both need
  the ensemble's seed and num_models to find m from its key.
  """
  per_model = teacher_probs is not None or start_params is not None
  table = key_table(seed, num_models) if per_model else None
  if teacher_probs is not None:
    teacher_probs = np.asarray(teacher_probs, np.float32)
    if teacher_probs.shape[:2] != (num_models, num_examples):
      raise ValueError(f'teacher_probs has shape {teacher_probs.shape}; expected ({num_models}, '
                       f'{num_examples}, classes).')
  if start_params is not None:
    start_params = jax.tree.map(np.asarray, start_params)

  def init_fn(rng):
    if per_model:
      m = model_index(rng, table)
    if start_params is not None:  # no model.init: its random draws cost a compile for nothing
      variables = {'params': jax.tree.map(lambda a: jnp.asarray(a)[m], start_params)}
    else:
      variables = dict(nn.meta.unbox(model.init(rng, x0)))
    if trace:
      zeros = jnp.zeros((num_examples,), jnp.float32)
      variables[TRACE] = {'presented': zeros, 'correct': zeros, 'last': zeros,
                          'forgets': zeros}
    if teacher_probs is not None:
      variables[TEACHER] = {'probs': jnp.asarray(teacher_probs)[m]}
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


def make_loss_fn(model: nn.Module, *, alpha: float = 1.0, tau: float = 1.0):
  """Per-example loss for train_ensemble. alpha = 1: one-hot cross-entropy; alpha < 1:
  distill.distillation_loss against the teacher probabilities in the model's own state."""

  def loss_fn(params, model_state, batch, rng):
    del rng
    logits = model.apply({'params': params, **_model_vars(model_state)}, batch['inputs'])
    if alpha < 1.0:
      probs = model_state[TEACHER]['probs'][batch['index']]
      losses = distill_loss.distillation_loss(logits, batch['label'], teacher_probs=probs,
                                              alpha=alpha, tau=tau)
    else:
      losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch['label'])
    new_state = dict(model_state)
    if TRACE in model_state:
      correct = jax.lax.stop_gradient(jnp.argmax(logits, -1) == batch['label'])
      new_state[TRACE] = _update_trace(model_state[TRACE], batch['index'], correct)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch['label'])
    return losses, ({'accuracy': accuracy}, new_state)

  return loss_fn


def even_chunk(num_models: int, target: int) -> int:
  """The largest divisor of num_models not above target: every dispatch holds the same number of
  models, so the step compiles once."""
  target = max(1, min(target, num_models))
  return max(d for d in range(1, target + 1) if num_models % d == 0)


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

  arrays: {'inputs', 'label'} (an 'index' is added). chunk_target: models per dispatch at most
  (0: the ensemble's cost-based choice), rounded down to a divisor of the number of models.
  """
  num_models, n = weights.shape
  arrays = {'inputs': np.asarray(arrays['inputs'], np.float32),
            'label': np.asarray(arrays['label'], np.int32),
            'index': np.arange(n, dtype=np.int32)}
  x0 = arrays['inputs'][:1]
  init_fn = make_init_fn(model, x0, n, trace=trace, seed=loop_config.seed, num_models=num_models,
                         teacher_probs=teacher_probs, start_params=start_params)
  loss_fn = make_loss_fn(model, alpha=alpha, tau=tau)
  if chunk_target <= 0:
    example = jax.tree.map(lambda a: jax.ShapeDtypeStruct((loop_config.batch_size,) + a.shape[1:],
                                                          a.dtype), arrays)
    from common import train as train_lib  # pylint: disable=g-import-not-at-top
    tx = train_lib.make_optimizer(loop_config.optimizer, total_steps)
    flops, conv = ensemble.step_cost(loss_fn, tx, init_fn, example)
    chunk_target = ensemble.choose_chunk(num_models, flops, conv)
  config = run_config(loop_config, num_models, total_steps, even_chunk(num_models, chunk_target))
  return ensemble.train_ensemble(config, workdir, init_fn=init_fn, loss_fn=loss_fn,
                                 arrays=arrays, weights=weights.astype(np.float32))


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
    out_logits, out_norm = jax.device_get(fn(variables, x, y))
    logits.append(np.asarray(out_logits)[:, :size - pad])
    norms.append(np.asarray(out_norm)[:, :size - pad])
  return Evaluation(logits=np.concatenate(logits, 1), grad_norm=np.concatenate(norms, 1))


def traces(state: ensemble.EnsembleState) -> dict[str, np.ndarray]:
  """The per-example training trace of every model: {name: (M, N)}."""
  return {k: np.asarray(jax.device_get(v)) for k, v in state.model_state[TRACE].items()}


def softmax(logits) -> np.ndarray:
  z = np.asarray(logits, np.float64)
  z = np.exp(z - z.max(-1, keepdims=True))
  return z / z.sum(-1, keepdims=True)

"""Training with the distillation loss through the common loop: teacher, one-hot, distilled and
late-switch students are one function with different (teacher, alpha, switch_step).

    init_fn = with_step_counter(lambda rng: model.init(rng, x0, train=False))
    loss_fn = make_loss_fn(model, num_classes=10, teacher=teacher, alpha=0.0, tau=1.0,
                           switch_step=500, augment=augment_fn(config.augment))
    train.train(loop_config, workdir, init_fn=init_fn, loss_fn=loss_fn, train_iter=...)

The loop's loss_fn(params, model_state, batch, rng) does not see the step, which late distillation
needs: the student counts its own steps in a mutable collection (`distill_step`) of model_state,
which the loop checkpoints and restores with the rest of the state, so a resumed run switches at
the same step. `per_example=True` returns (B,) losses, as common.ensemble's loss_fn expects.
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from common import classifier as classifier_lib
from common import config_lib
from common import evaluators as evaluators_lib
from common import mesh as mesh_lib
from common import models
from common import train as train_lib
from common.data import pipeline
from distill import loss as loss_lib
from distill.teacher import STEP_COLLECTION
from distill.teacher import Teacher

Augment = Callable[[jax.Array, jax.Array], jax.Array]  # (rng, inputs (B, ...)) -> inputs


# ---------------------------------------------------------------------------------------------
# Augmentation (inside the step, so the teacher sees exactly the student's inputs).
# ---------------------------------------------------------------------------------------------
def random_shift(rng, inputs, max_shift: int):
  """Shifts each example of (B, L, C) or (B, H, W, C) by up to max_shift positions along every
  spatial axis (a random offset per example and axis; what moves out is lost, zeros move in): the
  pad-and-crop augmentation, written as one-hot matrix products (cheap to compile, no gathers)."""
  if max_shift <= 0:
    return inputs
  spatial = inputs.shape[1:-1]
  offsets = jax.random.randint(rng, (inputs.shape[0], len(spatial)), -max_shift, max_shift + 1)
  x = inputs
  for axis, size in enumerate(spatial):
    # out[b, i] = in[b, i + offset_b]: row i of the (B, size, size) matrix is one_hot(i + offset).
    source = jnp.arange(size)[None, :] + offsets[:, axis:axis + 1]          # (B, size)
    shift = jax.nn.one_hot(source, size, dtype=x.dtype)                     # zero when outside
    x = jnp.moveaxis(jnp.einsum('bij,bj...->bi...', shift, jnp.moveaxis(x, axis + 1, 1)), 1,
                     axis + 1)
  return x


def augment_fn(config: ml_collections.ConfigDict | dict | None) -> Augment | None:
  """config {'max_shift': int, 'flip': bool, 'noise': float} -> an Augment, or None for none."""
  if not config:
    return None
  config = dict(config)
  unknown = set(config) - {'max_shift', 'flip', 'noise'}
  if unknown:
    raise config_lib.ConfigError(f'Unknown augmentation fields {sorted(unknown)}; use max_shift, '
                                 'flip, noise.')
  max_shift = int(config.get('max_shift', 0) or 0)
  flip = bool(config.get('flip', False))
  noise = float(config.get('noise', 0.0) or 0.0)
  if max_shift < 0 or noise < 0:
    raise config_lib.ConfigError(f'Augmentation max_shift and noise must be >= 0: {config}.')
  if not (max_shift or flip or noise):
    return None

  def augment(rng, inputs):
    shift_rng, flip_rng, noise_rng = jax.random.split(rng, 3)
    x = random_shift(shift_rng, inputs, max_shift)
    if flip:  # horizontal flip of images (B, H, W, C), or reversal of signals (B, L, C)
      do = jax.random.bernoulli(flip_rng, 0.5, (x.shape[0],) + (1,) * (x.ndim - 1))
      x = jnp.where(do, jnp.flip(x, axis=x.ndim - 2), x)
    if noise:
      x = x + noise * jax.random.normal(noise_rng, x.shape, x.dtype)
    return x

  return augment


# ---------------------------------------------------------------------------------------------
# The loss for the loop (and for common.ensemble with per_example=True).
# ---------------------------------------------------------------------------------------------
def with_step_counter(init_fn: Callable[[jax.Array], Any]) -> Callable[[jax.Array], Any]:
  """init_fn whose variables also hold the student's step count (see the module docstring)."""

  def init(rng):
    variables = dict(init_fn(rng))
    variables[STEP_COLLECTION] = {'step': jnp.zeros((), jnp.int32)}
    return variables

  return init


def make_loss_fn(model: nn.Module, *, num_classes: int, teacher: Teacher | None = None,
                 alpha: float = 0.0, tau: float = 1.0, switch_step: int = 0,
                 augment: Augment | None = None, per_example: bool = False):
  """loss_fn(params, model_state, batch, rng) -> (loss, (metrics, model_state)).

  Without a teacher: one-hot cross-entropy (alpha must then be 1 or is ignored: the teacher's
  term has nothing to distil). With one: the distillation loss with the teacher's logits on the
  same augmented inputs; before `switch_step` the one-hot loss (late distillation). model_state
  must hold the step counter: build the init with `with_step_counter`.
  """
  loss_lib.check_alpha(alpha)
  loss_lib.check_tau(tau)
  loss_lib.late_alpha(0, switch_step, alpha)  # checks switch_step
  if teacher is not None and teacher.num_classes != num_classes:
    raise loss_lib.DistillError(f'The teacher ({teacher.description}) predicts '
                                f'{teacher.num_classes} classes but the data has {num_classes}.')

  def loss_fn(params, model_state, batch, rng):
    if STEP_COLLECTION not in model_state:
      raise loss_lib.DistillError(f'model_state has no {STEP_COLLECTION!r} collection: build the '
                                  'init with distill.with_step_counter(init_fn).')
    step = model_state[STEP_COLLECTION]['step']
    rest = {k: v for k, v in model_state.items() if k != STEP_COLLECTION}
    aug_rng, dropout_rng = jax.random.split(rng)
    inputs = batch['inputs'] if augment is None else augment(aug_rng, batch['inputs'])
    mutable = list(rest.keys())
    out = model.apply({'params': params, **rest}, inputs, train=True,
                      rngs={'dropout': dropout_rng}, mutable=mutable or False)
    logits, new_rest = out if mutable else (out, rest)
    labels = batch['label']
    metrics = {'accuracy': jnp.mean(jnp.argmax(logits, -1) == labels)}
    if teacher is None:
      losses = loss_lib.cross_entropy(logits, labels)
    else:
      teacher_logits = jax.lax.stop_gradient(teacher.logits(inputs))
      weight = loss_lib.late_alpha(step, switch_step, alpha)
      losses = loss_lib.distillation_loss(logits, labels, teacher_logits, alpha=weight, tau=tau)
      metrics['agreement'] = jnp.mean(jnp.argmax(logits, -1) == jnp.argmax(teacher_logits, -1))
      metrics['one_hot_weight'] = weight
    new_state = {**dict(new_rest), STEP_COLLECTION: {'step': step + 1}}
    return (losses if per_example else jnp.mean(losses)), (metrics, new_state)

  return loss_fn


# ---------------------------------------------------------------------------------------------
# One trained model (teacher or student) with the common loop.
# ---------------------------------------------------------------------------------------------
def teacher_fingerprint(teacher: Teacher, sample: np.ndarray) -> str:
  """A digest of the teacher's probabilities on fixed inputs (rounded): a student's checkpoint
  records it, so a student of another teacher is not resumed as if it were this one's."""
  probs = np.asarray(jax.nn.softmax(teacher.logits(jnp.asarray(sample)), -1), np.float64)
  return hashlib.blake2b(np.round(probs, 3).tobytes(), digest_size=8).hexdigest()


def train_model(loop: ml_collections.ConfigDict, workdir: str, *,
                model_config: ml_collections.ConfigDict, arrays: dict[str, np.ndarray],
                num_classes: int, teacher: Teacher | None = None, alpha: float = 0.0,
                tau: float = 1.0, switch_step: int = 0,
                augment: ml_collections.ConfigDict | dict | None = None,
                eval_arrays: dict[str, dict[str, np.ndarray]] | None = None,
                mesh: jax.sharding.Mesh | None = None) -> classifier_lib.Classifier:
  """Trains common.models.build(model_config) on `arrays` with the loop config `loop`.

  teacher=None trains with one-hot labels (a teacher, or the one-hot baseline); otherwise the
  distillation loss (alpha, tau) from `switch_step` on. Everything but the loop's fields goes
  into the run's identity, so a rerun resumes only a run of the same student and teacher.
  """
  config_lib.check_loop(loop)
  labels = np.asarray(arrays['label'])
  if not np.issubdtype(labels.dtype, np.integer) or labels.ndim != 1:
    raise loss_lib.DistillError(f'Training labels must be (N,) class ids, got {labels.dtype} '
                                f'{labels.shape}.')
  if labels.min() < 0 or labels.max() >= num_classes:
    raise loss_lib.DistillError(f'Training labels must be in [0, {num_classes}); got '
                                f'{labels.min()}..{labels.max()}.')
  sample_inputs = np.asarray(arrays['inputs'][:8], np.float32)
  identity = {'model': model_config.to_dict() if hasattr(model_config, 'to_dict')
                       else dict(model_config),
              'augment': dict(augment or {}), 'num_classes': int(num_classes)}
  if teacher is not None:
    teacher.check(sample_inputs, num_classes)
    identity.update(alpha=float(alpha), tau=float(tau), switch_step=int(switch_step),
                    teacher=teacher_fingerprint(teacher, np.asarray(arrays['inputs'][:64])))
  model = models.build(model_config, num_classes)
  loss_fn = make_loss_fn(model, num_classes=num_classes, teacher=teacher, alpha=alpha, tau=tau,
                         switch_step=switch_step, augment=augment_fn(augment))
  x0 = jnp.zeros((1,) + sample_inputs.shape[1:], jnp.float32)
  init_fn = with_step_counter(lambda rng: model.init(rng, x0, train=False))
  mesh = mesh or mesh_lib.mesh_from_config(loop)
  evaluators = [evaluators_lib.ClassificationEvaluator(
      lambda p, s, x: model.apply({'params': p, **_without_counter(s)}, x, train=False),
      data, batch_size=1024, mesh=mesh, prefix=name) for name, data in (eval_arrays or {}).items()]
  result = train_lib.train(loop, workdir, init_fn=init_fn, loss_fn=loss_fn,
                           train_iter=pipeline.BatchIterator(arrays, loop.batch_size,
                                                             seed=loop.seed),
                           evaluators=evaluators, mesh=mesh, identity=identity)
  state = result.state.replace(model_state=_without_counter(result.state.model_state))
  result.state = state
  return classifier_lib.Classifier(model=model, result=result, num_classes=num_classes)


def _without_counter(model_state: dict[str, Any]) -> dict[str, Any]:
  return {k: v for k, v in model_state.items() if k != STEP_COLLECTION}

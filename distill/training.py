"""Teachers and students trained by common.ensemble: one-hot, distilled and late-switch students
are one loss with different per-model values (alpha, switch step, teacher).

    loss_fn = make_loss_fn(model, num_classes=10, teacher=teachers, tau=1.0,
                           augment=augment_fn(config.augment))
    model, result = train(loop, workdir, model_config=..., arrays=train, num_classes=10,
                          num_models=6, teacher=teachers, teacher_index=[0, 1, 0, 1, 0, 1],
                          alphas=[1, 1, 0, 0, 0, 0], switch_steps=[0, 0, 0, 0, 500, 500])
    probs = probabilities(model, result.state, test['inputs'])          # (M, N, C)

common.ensemble.train_ensemble trains the M models; each reads its own values in its loss from
batch['model'] (the ensemble's model_scalars): 'step' (0-based), 'alpha' (the one-hot weight once
distilling), 'switch_step' (one-hot before it: late distillation) and 'teacher' (its teacher's
index in a stack of teachers, distill.Teacher.from_models). The step is the ensemble's, saved with
its checkpoints, so a resumed run switches at the same step. With shared_order=True (the default
here) every model sees the same batches in the same order; with one group id per model (the
experiment: a seed's students) the models of a group share an order, so students of one seed in
different roles are paired while the seeds stay independent replicates; augmentation draws, initialisation and dropout are each model's own. The teacher
runs inside the step on the student's augmented inputs (a new random shift every step, so its
outputs cannot be computed ahead as per-example rows).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import scipy.special

from common import classifier as classifier_lib
from common import config_lib
from common import ensemble
from common import models
from configs.common import loop as loop_config
from distill import loss as loss_lib
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
# The loss (per example, for common.ensemble).
# ---------------------------------------------------------------------------------------------
SCALARS = ('alpha', 'switch_step', 'teacher')  # what a student reads from batch['model']


def make_loss_fn(model: nn.Module, *, num_classes: int, teacher: Teacher | None = None,
                 tau: float = 1.0, augment: Augment | None = None):
  """loss_fn(params, model_state, batch, rng) -> ((B,) losses, (metrics, model_state)).

  Without a teacher: one-hot cross-entropy. With one: the distillation loss with the teacher's
  logits on the same augmented inputs, weight batch['model']['alpha'] on the one-hot term from
  step batch['model']['switch_step'] on (before it: one-hot); a stack of teachers is indexed by
  batch['model']['teacher']. `train` gives these values; a direct caller of train_ensemble gives
  them as model_scalars.
  """
  loss_lib.check_tau(tau)
  if teacher is not None and teacher.num_classes != num_classes:
    raise loss_lib.DistillError(f'The teacher ({teacher.description}) predicts '
                                f'{teacher.num_classes} classes but the data has {num_classes}.')
  needs = () if teacher is None else SCALARS[:3 if teacher.num_teachers else 2]

  def loss_fn(params, model_state, batch, rng):
    own = batch[ensemble.MODEL_KEY]
    missing = [k for k in needs if k not in own]
    if missing:
      raise loss_lib.DistillError(f'batch[{ensemble.MODEL_KEY!r}] has no {missing}: give them to '
                                  'train_ensemble as model_scalars (one value per model), or '
                                  'train with distill.training.train.')
    aug_rng, dropout_rng = jax.random.split(rng)
    inputs = batch['inputs'] if augment is None else augment(aug_rng, batch['inputs'])
    logits, new_state = classifier_lib.apply_in_training(model, params, model_state, inputs,
                                                         dropout_rng)
    labels = batch['label']
    metrics = {'accuracy': jnp.mean(jnp.argmax(logits, -1) == labels)}
    if teacher is None:
      losses = loss_lib.cross_entropy(logits, labels)
    else:
      teacher_logits = jax.lax.stop_gradient(teacher.logits(inputs, own.get('teacher')))
      weight = jnp.where(own['step'] < own['switch_step'], 1.0, own['alpha'])
      losses = loss_lib.distillation_loss(logits, labels, teacher_logits, alpha=weight, tau=tau)
      metrics['agreement'] = jnp.mean(jnp.argmax(logits, -1) == jnp.argmax(teacher_logits, -1))
      metrics['one_hot_weight'] = weight
    return losses, (metrics, dict(new_state))

  return loss_fn


# ---------------------------------------------------------------------------------------------
# M teachers or students in one ensemble.
# ---------------------------------------------------------------------------------------------
def teacher_fingerprint(teacher: Teacher, sample: np.ndarray) -> str:
  """A digest of the teacher's probabilities (every teacher of a stack) on fixed inputs, rounded:
  a student's checkpoint records it, so a student of another teacher is not resumed as if it were
  this one's."""
  x = jnp.asarray(sample, jnp.float32)
  indices = range(teacher.num_teachers) if teacher.num_teachers else [None]
  probs = np.stack([np.asarray(jax.nn.softmax(teacher.logits(x, i), -1), np.float64)
                    for i in indices])
  return hashlib.blake2b(np.round(probs, 3).tobytes(), digest_size=8).hexdigest()


def _per_model(name: str, values, default, num_models: int, dtype) -> np.ndarray:
  values = np.full(num_models, default) if values is None else np.asarray(values)
  if values.shape != (num_models,):
    raise loss_lib.DistillError(f'{name} needs one value per model ({num_models}); got shape '
                                f'{values.shape}.')
  if dtype == np.int32 and (not np.issubdtype(values.dtype, np.integer) or values.min() < 0):
    raise loss_lib.DistillError(f'{name} must be whole numbers >= 0, got {values.tolist()}.')
  return values.astype(dtype)


def _check_labels(arrays, num_classes: int) -> None:
  labels = np.asarray(arrays['label'])
  if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
    raise loss_lib.DistillError(f'Training labels must be (N,) class ids, got {labels.dtype} '
                                f'{labels.shape}.')
  if labels.min() < 0 or labels.max() >= num_classes:
    raise loss_lib.DistillError(f'Training labels must be in [0, {num_classes}); got '
                                f'{labels.min()}..{labels.max()}.')


def ensemble_loop(loop: ml_collections.ConfigDict, num_models: int) -> ml_collections.ConfigDict:
  """The loop's fields with an ensemble section of num_models (its model_axis and chunk_size
  kept when the loop has one)."""
  loop = loop.copy_and_resolve_references()
  with loop.unlocked():
    section = loop.get('ensemble')
    loop.ensemble = loop_config.ensemble(
        num_models, **({k: section[k] for k in ('model_axis', 'chunk_size') if k in section}
                       if section else {}))
  return loop


def train(loop: ml_collections.ConfigDict, workdir: str, *, model_config, num_models: int,
          arrays: dict[str, np.ndarray], num_classes: int, teacher: Teacher | None = None,
          teacher_index: Sequence[int] | None = None, alphas: Sequence[float] | None = None,
          switch_steps: Sequence[int] | None = None, tau: float = 1.0, augment=None,
          shared_order=True, identity: dict[str, Any] | None = None):
  """Trains num_models models of common.models.build(model_config) with train_ensemble; returns
  (model, EnsembleResult).

  teacher=None: one-hot labels. Otherwise model m distils from teacher (teacher_index[m] of a
  stack: default m) with one-hot weight alphas[m] (default 0) from step switch_steps[m] (default
  0) on. Everything that decides the result beyond the loop's fields and these values (model,
  teacher, augmentation, tau, `identity`) goes into the run's identity, so a rerun resumes only
  the same run.
  """
  config_lib.check_loop(loop)
  if isinstance(num_models, bool) or not isinstance(num_models, (int, np.integer)) \
      or num_models < 1:
    raise loss_lib.DistillError(f'num_models must be a whole number >= 1, got {num_models!r}.')
  _check_labels(arrays, num_classes)
  sample = np.asarray(arrays['inputs'][:8], np.float32)
  run_identity = {
      'model': model_config.to_dict() if hasattr(model_config, 'to_dict') else dict(model_config),
      'num_classes': int(num_classes), 'augment': dict(augment or {}), 'tau': float(tau),
      **(identity or {})}
  scalars = None
  if teacher is not None:
    teacher.check(sample, num_classes)
    run_identity['teacher'] = teacher_fingerprint(teacher, sample)
    scalars = {'alpha': _per_model('alphas', alphas, 0.0, num_models, np.float32),
               'switch_step': _per_model('switch_steps', switch_steps, 0, num_models, np.int32)}
    for a in scalars['alpha']:
      loss_lib.check_alpha(float(a))
    if teacher.num_teachers:
      index = _per_model('teacher_index', teacher_index, 0, num_models, np.int32) \
          if teacher_index is not None else np.arange(num_models, dtype=np.int32)
      if index.max() >= teacher.num_teachers:
        raise loss_lib.DistillError(f'teacher_index {index.tolist()} points past the stack of '
                                    f'{teacher.num_teachers} teachers.')
      scalars['teacher'] = index
    elif teacher_index is not None:
      raise loss_lib.DistillError('teacher_index given for a single teacher: build a stack '
                                  '(Teacher.from_models) or leave it out.')
  model = models.build(model_config, num_classes)
  loss_fn = make_loss_fn(model, num_classes=num_classes, teacher=teacher, tau=tau,
                         augment=augment_fn(augment))
  x0 = jnp.zeros((1,) + sample.shape[1:], jnp.float32)
  result = ensemble.train_ensemble(
      ensemble_loop(loop, num_models), workdir,
      init_fn=lambda rng: model.init(rng, x0, train=False), loss_fn=loss_fn, arrays=arrays,
      model_scalars=scalars, shared_order=shared_order, num_classes=num_classes,
      identity=run_identity)
  return model, result


# Model-examples in one evaluation dispatch (common.ensemble.predict): its activations grow with
# models x batch on every device (ResNet-18 on 32x32 images: ~2 MiB per model-example, so 24
# models at a batch of 1024 needed ~20 GiB of temporaries per device; at this budget ~0.3 GiB).
EVAL_MODEL_EXAMPLES = 128


def probabilities(model: nn.Module, state: ensemble.EnsembleState, inputs: np.ndarray, *,
                  batch_size: int | None = None) -> np.ndarray:
  """(M, N, C) float64 softmax outputs of every model of `state` on every input; batch_size None:
  EVAL_MODEL_EXAMPLES // M examples per dispatch (at least 1, at most 1024)."""
  if batch_size is None:
    num_models = int(np.shape(state.nonfinite_step)[0])
    batch_size = int(np.clip(EVAL_MODEL_EXAMPLES // num_models, 1, 1024))
  logits = ensemble.predict(state, lambda v, x: model.apply(v, x, train=False),
                            np.asarray(inputs, np.float32), batch_size=batch_size)
  return scipy.special.softmax(logits.astype(np.float64), axis=-1)


def variables_of(state: ensemble.EnsembleState, index=None) -> dict[str, Any]:
  """The variables of every model (every leaf (M, ...)), or of model `index` alone."""
  variables = {'params': state.params, **state.model_state}
  return variables if index is None else jax.tree.map(lambda a: a[index], variables)


# ---------------------------------------------------------------------------------------------
# One model (an ensemble of one), for notebooks and library users.
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class TrainedModel:
  """A trained model: its module, variables and classes (what Teacher.from_classifier takes)."""
  model: nn.Module
  variables: dict[str, Any]
  num_classes: int
  result: ensemble.EnsembleResult

  @functools.cached_property
  def _apply(self):
    return jax.jit(lambda v, x: self.model.apply(v, x, train=False))  # compiled once per shape

  def logits(self, inputs: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    return np.concatenate([np.asarray(self._apply(self.variables, inputs[i:i + batch_size]))
                           for i in range(0, len(inputs), batch_size)])


def train_model(loop: ml_collections.ConfigDict, workdir: str, *,
                model_config: ml_collections.ConfigDict, arrays: dict[str, np.ndarray],
                num_classes: int, teacher: Teacher | None = None, alpha: float = 0.0,
                tau: float = 1.0, switch_step: int = 0,
                augment: ml_collections.ConfigDict | dict | None = None) -> TrainedModel:
  """One model of common.models.build(model_config) trained on `arrays` (`train` with one model):
  teacher=None on one-hot labels (a teacher, or the one-hot baseline); otherwise the distillation
  loss (alpha, tau) from `switch_step` on."""
  loss_lib.check_alpha(alpha)
  loss_lib.late_alpha(0, switch_step, alpha)  # checks switch_step
  kwargs = {} if teacher is None else dict(alphas=[alpha], switch_steps=[switch_step])
  model, result = train(loop, workdir, model_config=model_config, num_models=1, arrays=arrays,
                        num_classes=num_classes, teacher=teacher, tau=tau, augment=augment,
                        **kwargs)
  return TrainedModel(model=model, variables=variables_of(result.state, 0),
                      num_classes=int(num_classes), result=result)

"""The teacher: a function from inputs to logits, from a trained model, a checkpoint or any callable.

    teacher = Teacher.from_model(model, variables)              # a flax module and its variables
    teachers = Teacher.from_models(model, stacked_variables)    # T models, every leaf (T, ...)
    teacher = Teacher.from_checkpoint(workdir, model)           # a run of common.train/ensemble
    teacher = Teacher.from_function(lambda x: logits(x), num_classes=10)
    teacher.check(sample_inputs, num_classes=10)                # before any training step

The teacher is evaluated inside the student's step on the student's (augmented) inputs, so its
logits_fn must be traceable by jax; its outputs carry no gradient. A stack of teachers
(`num_teachers` > 0) takes the index of the one to use, `logits(inputs, index)`: in an ensemble
of students, student m reads its teacher's index from its own values (batch['model']['teacher'],
common.ensemble's model_scalars), so many students learn from many teachers in one run.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from common import mesh as mesh_lib
from distill import loss as loss_lib


@dataclasses.dataclass(frozen=True)
class Teacher:
  """logits_fn(inputs (B, ...)) -> (B, num_classes) logits, traceable; num_classes as declared.

  num_teachers > 0: a stack of that many teachers, logits_fn(inputs, index) with a traced index.
  """
  logits_fn: Callable[..., jax.Array]
  num_classes: int
  description: str = 'function'
  num_teachers: int = 0

  def __post_init__(self):
    if not callable(self.logits_fn):
      raise loss_lib.DistillError(f'logits_fn must be callable, got {type(self.logits_fn)}.')
    n = self.num_classes
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
      raise loss_lib.DistillError(f'num_classes must be a whole number >= 2, got {n!r}.')
    t = self.num_teachers
    if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or t < 0:
      raise loss_lib.DistillError(f'num_teachers must be 0 (one teacher) or the size of a stack, '
                                  f'got {t!r}.')

  @classmethod
  def from_function(cls, fn: Callable[[jax.Array], jax.Array], num_classes: int) -> 'Teacher':
    return cls(logits_fn=fn, num_classes=int(num_classes), description='function')

  @classmethod
  def from_model(cls, model: nn.Module, variables: dict[str, Any],
                 num_classes: int | None = None) -> 'Teacher':
    """A flax module applied in inference mode (train=False) with fixed variables."""
    num_classes = _num_classes(model, num_classes)
    fn = lambda x: model.apply(variables, x, train=False)
    return cls(logits_fn=fn, num_classes=num_classes,
               description=f'{type(model).__name__} module')

  @classmethod
  def from_models(cls, model: nn.Module, variables: dict[str, Any],
                  num_classes: int | None = None) -> 'Teacher':
    """A stack of T teachers of one architecture: every leaf of `variables` (T, ...) (what
    common.ensemble trains); logits(inputs, index) applies teacher `index` (traced or not).

    The stack is copied to the host (every process gets all of it): an ensemble's state is sharded
    over the mesh's model axis, and indexing it outside a step (check, fingerprint) would run a
    collective over the devices for every variable; inside the students' step the stack is a
    constant either way. The teachers' state may be let go afterwards.
    """
    variables = jax.tree.map(_on_host, dict(variables))
    sizes = {int(a.shape[0]) if a.ndim else 0 for a in jax.tree.leaves(variables)}
    if len(sizes) != 1 or 0 in sizes:
      raise loss_lib.DistillError(f'Stacked teachers need every variable (T, ...) with one T; got '
                                  f'leading sizes {sorted(sizes)}.')
    num_classes = _num_classes(model, num_classes)

    def fn(x, index):
      if isinstance(index, (int, np.integer)):  # a known teacher: sliced on the host
        one = jax.tree.map(lambda a: a[index], variables)
      else:
        one = jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, index, keepdims=False),
                           variables)
      return model.apply(one, x, train=False)

    return cls(logits_fn=fn, num_classes=num_classes, num_teachers=sizes.pop(),
               description=f'stack of {type(model).__name__} modules')

  @classmethod
  def from_classifier(cls, classifier) -> 'Teacher':
    """A common.classifier.Classifier (what train_classifier and train_student return)."""
    return cls.from_model(classifier.model, classifier.variables, classifier.num_classes)

  @classmethod
  def from_checkpoint(cls, workdir: str, model: nn.Module, step: int | None = None,
                      num_classes: int | None = None, index: int | None = None) -> 'Teacher':
    """The newest (or `step`'s) state saved in workdir/checkpoints by common.train, or by
    common.ensemble: then model `index` of it, or with index=None its only model, or the stack of
    all of them (from_models) when it holds several."""
    from common import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
    directory = os.path.join(workdir, 'checkpoints')
    if not os.path.isdir(directory):
      raise loss_lib.DistillError(f'No teacher checkpoint: {directory} does not exist (train the '
                                  'teacher there first, or give the run\'s workdir).')
    checkpointer = ckpt_lib.Checkpointer(directory, save_every_steps=1)
    try:
      state = checkpointer.restore_arrays(step)
    finally:
      checkpointer.close()
    variables = {'params': state['params'], **dict(state.get('model_state') or {})}
    if 'nonfinite_step' not in state:  # common.train: one model
      if index is not None:
        raise loss_lib.DistillError(f'index={index}: {directory} holds one model (common.train), '
                                    'not an ensemble; leave index out.')
      teacher = cls.from_model(model, variables, num_classes)
    else:  # common.ensemble: every leaf (M, ...)
      num_models = len(np.asarray(state['nonfinite_step']))
      if index is None and num_models > 1:
        teacher = cls.from_models(model, variables, num_classes)
      else:
        index = 0 if index is None else index
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) \
            or not 0 <= index < num_models:
          raise loss_lib.DistillError(f'index={index!r}: {directory} holds {num_models} models; '
                                      f'use 0..{num_models - 1}.')
        teacher = cls.from_model(model, jax.tree.map(lambda a: a[index], variables),
                                 num_classes)
    return dataclasses.replace(teacher, description=f'checkpoint {directory}')

  def logits(self, inputs, index=None) -> jax.Array:
    """(B, C) logits; index: which teacher of a stack (required then, ignored otherwise)."""
    if not self.num_teachers:
      return self.logits_fn(inputs)
    if index is None:
      raise loss_lib.DistillError(f'The teacher ({self.description}) is a stack of '
                                  f'{self.num_teachers}: give the index of the one to use.')
    return self.logits_fn(inputs, index)

  def probs(self, inputs, tau: float = 1.0, index=None) -> jax.Array:
    return loss_lib.tempered_probs(self.logits(inputs, index), tau)

  def check(self, sample_inputs, num_classes: int) -> None:
    """Fails before compute when the teacher's outputs do not fit the data: their shape always;
    when `sample_inputs` are concrete arrays the teacher also runs on them once, and outputs with
    a NaN or +inf, or rows that are probabilities (non-negative, summing to 1) rather than
    logits, are refused (inside the training step they could not be)."""
    if int(num_classes) != self.num_classes:
      raise loss_lib.DistillError(
          f'The teacher ({self.description}) predicts {self.num_classes} classes but the data '
          f'has {num_classes}.')
    sample = jax.ShapeDtypeStruct(np.shape(sample_inputs), jnp.float32)
    # A stack is checked through each of its teachers (shapes once, values every one).
    indices = range(self.num_teachers) if self.num_teachers else [None]
    try:
      out = jax.eval_shape(lambda x: self.logits(x, 0 if self.num_teachers else None), sample)
    except Exception as e:  # pylint: disable=broad-except
      raise loss_lib.DistillError(f'The teacher ({self.description}) cannot take inputs of shape '
                                  f'{sample.shape}: {e}') from e
    # One row of logits per example: the output's leading axes are the input's.
    shape = tuple(getattr(out, 'shape', ()))
    if not shape or shape[-1] != self.num_classes or \
        shape[:-1] != tuple(sample.shape[:len(shape) - 1]):
      raise loss_lib.DistillError(
          f'The teacher ({self.description}) returns shape {shape or out} for inputs '
          f'{sample.shape}; expected logits with {self.num_classes} classes (those of the data: '
          f'{num_classes}) and one row per example.')
    if isinstance(sample_inputs, (jax.ShapeDtypeStruct, jax.core.Tracer)):
      return
    for index in indices:
      which = self.description + ('' if index is None else f', teacher {index}')
      outputs = np.asarray(self.logits(jnp.asarray(sample_inputs, jnp.float32), index))
      if loss_lib.looks_like_probabilities(outputs):
        raise loss_lib.DistillError(
            f'The teacher ({which}) returns probabilities (every row non-negative and summing to '
            '1 on the sample inputs), not logits: return the scores before the softmax (the loss '
            'applies softmax(logits / tau) itself).')
      loss_lib.check_teacher_logits(outputs, f'The teacher ({which})\'s logits')


def _on_host(a) -> np.ndarray:
  """A whole array on the host, on every process (common.mesh.fetch)."""
  return np.asarray(mesh_lib.fetch(a))


def _num_classes(model: nn.Module, num_classes: int | None) -> int:
  num_classes = num_classes or getattr(model, 'num_outputs', None)
  if num_classes is None:
    raise loss_lib.DistillError('Give num_classes: the model has no num_outputs attribute.')
  return int(num_classes)

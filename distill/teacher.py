"""The teacher: a function from inputs to logits, from a trained model, a checkpoint or any callable.

    teacher = Teacher.from_model(model, variables)              # a flax module and its variables
    teacher = Teacher.from_checkpoint(workdir, model)           # a run of common.train
    teacher = Teacher.from_function(lambda x: logits(x), num_classes=10)
    teacher.check(sample_inputs, num_classes=10)                # before any training step

The teacher is evaluated inside the student's step on the student's (augmented) inputs, so its
logits_fn must be traceable by jax; its outputs carry no gradient.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from distill import loss as loss_lib

# The mutable collection where a student keeps its own step count (see distill.training).
STEP_COLLECTION = 'distill_step'


@dataclasses.dataclass(frozen=True)
class Teacher:
  """logits_fn(inputs (B, ...)) -> (B, num_classes) logits, traceable; num_classes as declared."""
  logits_fn: Callable[[jax.Array], jax.Array]
  num_classes: int
  description: str = 'function'

  def __post_init__(self):
    if not callable(self.logits_fn):
      raise loss_lib.DistillError(f'logits_fn must be callable, got {type(self.logits_fn)}.')
    n = self.num_classes
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
      raise loss_lib.DistillError(f'num_classes must be a whole number >= 2, got {n!r}.')

  @classmethod
  def from_function(cls, fn: Callable[[jax.Array], jax.Array], num_classes: int) -> 'Teacher':
    return cls(logits_fn=fn, num_classes=int(num_classes), description='function')

  @classmethod
  def from_model(cls, model: nn.Module, variables: dict[str, Any],
                 num_classes: int | None = None) -> 'Teacher':
    """A flax module applied in inference mode (train=False) with fixed variables."""
    variables = {k: v for k, v in variables.items() if k != STEP_COLLECTION}
    num_classes = num_classes or getattr(model, 'num_outputs', None) or getattr(
        getattr(model, 'model', None), 'num_outputs', None)
    if num_classes is None:
      raise loss_lib.DistillError('Give num_classes: the model has no num_outputs attribute.')
    fn = lambda x: model.apply(variables, x, train=False)
    return cls(logits_fn=fn, num_classes=int(num_classes),
               description=f'{type(model).__name__} module')

  @classmethod
  def from_classifier(cls, classifier) -> 'Teacher':
    """A common.classifier.Classifier (what train_classifier and train_student return)."""
    return cls.from_model(classifier.model, classifier.variables, classifier.num_classes)

  @classmethod
  def from_checkpoint(cls, workdir: str, model: nn.Module, step: int | None = None,
                      num_classes: int | None = None) -> 'Teacher':
    """The newest (or `step`'s) state saved by common.train in workdir/checkpoints."""
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
    teacher = cls.from_model(model, variables, num_classes)
    return dataclasses.replace(teacher, description=f'checkpoint {directory}')

  def logits(self, inputs) -> jax.Array:
    return self.logits_fn(inputs)

  def probs(self, inputs, tau: float = 1.0) -> jax.Array:
    return loss_lib.tempered_probs(self.logits_fn(inputs), tau)

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
    try:
      out = jax.eval_shape(self.logits_fn, sample)
    except Exception as e:  # pylint: disable=broad-except
      raise loss_lib.DistillError(f'The teacher ({self.description}) cannot take inputs of shape '
                                  f'{sample.shape}: {e}') from e
    # One row of logits per example: the output's leading axes are the input's (a batch (B, ...)
    # gives (B, C); copies of a model take (M, B, ...) and give (M, B, C)).
    shape = tuple(getattr(out, 'shape', ()))
    if not shape or shape[-1] != self.num_classes or \
        shape[:-1] != tuple(sample.shape[:len(shape) - 1]):
      raise loss_lib.DistillError(
          f'The teacher ({self.description}) returns shape {shape or out} for inputs '
          f'{sample.shape}; expected logits with {self.num_classes} classes (those of the data: '
          f'{num_classes}) and one row per example.')
    if isinstance(sample_inputs, (jax.ShapeDtypeStruct, jax.core.Tracer)):
      return
    outputs = np.asarray(self.logits_fn(jnp.asarray(sample_inputs, jnp.float32)))
    if loss_lib.looks_like_probabilities(outputs):
      raise loss_lib.DistillError(
          f'The teacher ({self.description}) returns probabilities (every row non-negative and '
          'summing to 1 on the sample inputs), not logits: return the scores before the softmax '
          '(the loss applies softmax(logits / tau) itself).')
    loss_lib.check_teacher_logits(outputs, f'The teacher ({self.description})\'s logits')

"""The distillation loss, per example, and late distillation's schedule.

    losses = distillation_loss(student_logits, labels, teacher_logits, alpha=0.5, tau=2.0)  # (B,)

    l_i = alpha CE(y_i, p_S(x_i)) + (1 - alpha) tau^2 sum_c -p_T,c(x_i; tau) log p_S,c(x_i; tau)

with p(x; tau) = softmax(logits / tau). The tau^2 keeps the soft term's gradient on the scale of the
hard term's (Hinton et al.); at tau = 1 it changes nothing. The teacher's probabilities carry no
gradient. Every check that can be made before compute is made: shapes and class counts always,
label ranges, probability rows and teacher logits (finite, not probabilities) when the arrays are
concrete (not traced inside jit); under jit a NaN teacher makes the loss NaN, never finite.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


class DistillError(ValueError):
  """Distillation inputs that cannot be right; the message says what was expected."""


def _concrete(x) -> bool:
  return not isinstance(x, jax.core.Tracer)


def check_tau(tau) -> None:
  """tau must be a finite number > 0 (a traced tau is checked by its caller)."""
  if not _concrete(tau):
    return
  value = np.asarray(tau)
  if value.ndim or not np.issubdtype(value.dtype, np.number) or value.dtype == bool:
    raise DistillError(f'tau must be one number > 0, got {tau!r}.')
  if not (np.isfinite(value) and value > 0):
    raise DistillError(f'tau must be a finite number > 0 (the softmax temperature), got {tau!r}.')


def check_alpha(alpha) -> None:
  """alpha (the weight of the one-hot term) must lie in [0, 1]."""
  if not _concrete(alpha):
    return
  value = np.asarray(alpha)
  if value.ndim or not np.issubdtype(value.dtype, np.number) or value.dtype == bool:
    raise DistillError(f'alpha must be one number in [0, 1], got {alpha!r}.')
  if not (np.isfinite(value) and 0.0 <= value <= 1.0):
    raise DistillError(f'alpha must lie in [0, 1] (1: one-hot only, 0: teacher only), '
                       f'got {alpha!r}.')


def check_logits(logits, name: str = 'student_logits') -> tuple[int, int]:
  """(B, C) real scores; returns (B, C)."""
  shape = np.shape(logits)
  if len(shape) != 2:
    raise DistillError(f'{name} must be (batch, classes) scores, got shape {shape}.')
  if shape[1] < 2:
    raise DistillError(f'{name} has {shape[1]} class(es); a classifier needs at least 2.')
  if not jnp.issubdtype(jnp.result_type(logits), jnp.floating):
    raise DistillError(f'{name} must be real-valued scores (floats), not {jnp.result_type(logits)}.')
  return shape


def check_labels(labels, batch: int, num_classes: int, name: str = 'labels') -> None:
  """(B,) integer class ids in [0, num_classes)."""
  shape = np.shape(labels)
  if shape != (batch,):
    hint = (' (one-hot or probability rows? pass class ids)' if len(shape) == 2 else '')
    raise DistillError(f'{name} must be ({batch},) class ids, got shape {shape}{hint}.')
  if not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
    raise DistillError(f'{name} must be integer class ids, not {jnp.result_type(labels)}.')
  if _concrete(labels) and batch:
    values = np.asarray(labels)
    if values.min() < 0 or values.max() >= num_classes:
      raise DistillError(f'{name} must be in [0, {num_classes}); got values from {values.min()} '
                         f'to {values.max()}.')


def check_probs(probs, batch: int, num_classes: int, name: str = 'teacher_probs',
                atol: float = 1e-3) -> None:
  """(B, C) rows of probabilities (non-negative, summing to one when concrete)."""
  shape = np.shape(probs)
  if len(shape) == 1:
    raise DistillError(f'{name} must be ({batch}, {num_classes}) probabilities, got shape '
                       f'{shape}: class ids? Pass them as labels, or one-hot them.')
  if shape != (batch, num_classes):
    what = ('the teacher has a different number of classes than the student'
            if len(shape) == 2 and shape[0] == batch else 'one row per example')
    raise DistillError(f'{name} has shape {shape}, expected ({batch}, {num_classes}): {what}.')
  if _concrete(probs):
    values = np.asarray(probs, np.float64)
    if not np.all(np.isfinite(values)) or values.min() < 0:
      raise DistillError(f'{name} must be finite and non-negative (probabilities, not logits).')
    sums = values.sum(1)
    if batch and np.max(np.abs(sums - 1.0)) > atol:
      worst = int(np.argmax(np.abs(sums - 1.0)))
      raise DistillError(f'{name} rows must sum to 1 (probabilities, not logits); row {worst} '
                         f'sums to {sums[worst]:.4g}.')


def looks_like_probabilities(values, atol: float = 1e-5) -> bool:
  """True when every row of `values` (..., C) is non-negative and sums to 1 within `atol`: softmax
  outputs where logits belong. Real logits essentially never satisfy this for every row."""
  array = np.asarray(values, np.float64)
  if array.ndim < 1 or array.size == 0 or not np.all(np.isfinite(array)):
    return False
  return bool(array.min() >= 0 and np.max(np.abs(array.sum(-1) - 1.0)) <= atol)


def check_teacher_logits(logits, name: str = 'teacher_logits') -> None:
  """Concrete teacher scores (..., C) must be logits: no NaN or +inf (a row with one would drop
  its soft term or make it NaN), not every class -inf, and not probability rows (every row
  non-negative, summing to 1), which the softmax would flatten toward uniform. -inf for a class
  the teacher rules out is allowed. Traced scores are not checked (see distillation_loss)."""
  if not _concrete(logits):
    return
  values = np.asarray(logits, np.float64)
  if values.size == 0:
    return
  rows = values.reshape(-1, values.shape[-1])
  bad = np.isnan(rows) | (rows == np.inf)
  if np.any(bad):
    row, col = (int(i) for i in np.argwhere(bad)[0])
    count = int(bad.any(1).sum())
    raise DistillError(f'{name} row {row} has {rows[row, col]} at class {col} ({count} such '
                       'row(s)): a teacher\'s logits must be finite (-inf only for a class it '
                       'rules out). Check the teacher\'s outputs on these inputs.')
  dead = np.all(rows == -np.inf, axis=1)
  if np.any(dead):
    raise DistillError(f'{name} row {int(np.flatnonzero(dead)[0])} is -inf for every class: '
                       'the teacher gives that example no probability anywhere.')
  if looks_like_probabilities(rows):
    raise DistillError(f'{name} look like probabilities (every row is non-negative and sums to 1): '
                       'softmax would treat them as logits and flatten them. Pass them as '
                       'teacher_probs=... instead, or pass the teacher\'s logits.')


def tempered_probs(logits, tau: float = 1.0):
  """softmax(logits / tau): p(x; tau), the teacher's soft targets at temperature tau."""
  check_tau(tau)
  return jax.nn.softmax(jnp.asarray(logits) / tau, axis=-1)


def soft_cross_entropy(student_logits, teacher_log_targets, tau: float = 1.0):
  """(B,) tau^2 sum_c -softmax(t / tau)_c log_softmax(s / tau)_c for teacher log-scores t."""
  targets = jax.lax.stop_gradient(jax.nn.softmax(teacher_log_targets / tau, axis=-1))
  log_p = jax.nn.log_softmax(student_logits / tau, axis=-1)
  # 0 * log p must be 0 even where the teacher's probability underflows and log p is -inf; a NaN
  # target (a NaN or +inf teacher score under jit) must stay NaN, so the loop's guard stops it.
  return tau**2 * -jnp.sum(jnp.where(targets == 0, 0.0, targets * log_p), axis=-1)


def cross_entropy(student_logits, labels):
  """(B,) one-hot cross-entropy -log p_S(y | x)."""
  batch, num_classes = check_logits(student_logits)
  check_labels(labels, batch, num_classes)
  log_p = jax.nn.log_softmax(jnp.asarray(student_logits, jnp.float32), axis=-1)
  return -jnp.take_along_axis(log_p, jnp.asarray(labels)[:, None], axis=-1)[:, 0]


def distillation_loss(student_logits, labels=None, teacher_logits=None, *, teacher_probs=None,
                      alpha: Any = 0.5, tau: Any = 1.0):
  """(B,) per-example loss alpha CE(y, p_S) + (1 - alpha) tau^2 CE(p_T(tau), p_S(tau)).

  Args:
    student_logits: (B, C) scores of the student.
    labels: (B,) integer class ids; may be None only when alpha == 0 (teacher only).
    teacher_logits: (B, C) scores of the teacher on the same (augmented) inputs (-inf allowed
      for a class the teacher rules out); or
    teacher_probs: (B, C) probabilities of the teacher at temperature 1 (e.g. an ensemble's
      mean); tempered as softmax(log p / tau). Give exactly one of the two.
    alpha: weight of the one-hot term in [0, 1]; may be traced (late distillation's schedule).
    tau: temperature > 0 applied to both the teacher and the student in the soft term.

  Concrete teacher logits with a NaN or +inf are refused with the row named, and so are rows that
  are all probabilities (non-negative, summing to 1 within 1e-5: pass those as teacher_probs).
  Under jit neither can raise: a NaN or +inf teacher score makes that example's loss NaN (never a
  silently dropped soft term), which the training loop's non-finite guard stops; probabilities
  passed as logits are not detected inside a traced step (a check there could only turn the loss
  NaN on inputs that may be genuine logits), so distill's teachers are checked once, eagerly, on a
  sample batch before training (`Teacher.check`).
  """
  check_alpha(alpha)
  check_tau(tau)
  batch, num_classes = check_logits(student_logits)
  if (teacher_logits is None) == (teacher_probs is None):
    raise DistillError('Give exactly one of teacher_logits and teacher_probs.')
  if teacher_logits is not None:
    t_shape = np.shape(teacher_logits)
    if len(t_shape) == 2 and t_shape[0] == batch and t_shape[1] != num_classes:
      raise DistillError(f'The teacher has {t_shape[1]} classes and the student {num_classes}: '
                         'they must predict the same classes.')
    if t_shape != (batch, num_classes):
      raise DistillError(f'teacher_logits has shape {t_shape}, expected ({batch}, {num_classes}).')
    check_logits(teacher_logits, 'teacher_logits')
    check_teacher_logits(teacher_logits)
    teacher_scores = jnp.asarray(teacher_logits, jnp.float32)
  else:
    check_probs(teacher_probs, batch, num_classes)
    # log p / tau: softmax of it is p^(1/tau) normalised; zeros stay zeros.
    teacher_scores = jnp.log(jnp.asarray(teacher_probs, jnp.float32))
  if labels is None:
    if _concrete(alpha) and float(alpha) != 0.0:
      raise DistillError(f'labels are needed for the one-hot term (alpha={alpha}); pass labels or '
                         'set alpha=0.')
    hard = jnp.zeros((batch,), jnp.float32)
  else:
    hard = cross_entropy(student_logits, labels)
  soft = soft_cross_entropy(jnp.asarray(student_logits, jnp.float32), teacher_scores, tau)
  return alpha * hard + (1.0 - alpha) * soft


def late_alpha(step, switch_step: int, alpha: float):
  """Late distillation's weight on the one-hot term: 1 before `switch_step`, then `alpha`.

  switch_step = 0 is distillation from the start; a switch_step past the run's end is one-hot
  training throughout.
  """
  check_alpha(alpha)
  if isinstance(switch_step, bool) or not isinstance(switch_step, (int, np.integer)) \
      or switch_step < 0:
    raise DistillError(f'switch_step must be a whole number >= 0, got {switch_step!r}.')
  return jnp.where(jnp.asarray(step) < switch_step, 1.0, alpha)


def switch_step_of(fraction: float, total_steps: int) -> int:
  """The step at which late distillation switches: `fraction` of the run, rounded."""
  if not (isinstance(fraction, (int, float)) and 0.0 <= fraction <= 1.0):
    raise DistillError(f'The switch point must be a fraction of training in [0, 1], got '
                       f'{fraction!r}.')
  return int(math.floor(fraction * total_steps + 0.5))

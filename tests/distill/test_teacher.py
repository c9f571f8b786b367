"""Teacher.check: what it refuses before compute when it sees the teacher's outputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import distill


def _sample():
  return np.random.default_rng(0).normal(size=(8, 5)).astype(np.float32)


def _weights():
  return jnp.asarray(np.random.default_rng(1).normal(size=(5, 3)), jnp.float32)


def test_a_teacher_that_returns_logits_passes():
  w = _weights()
  distill.Teacher.from_function(lambda x: x @ w, num_classes=3).check(_sample(), 3)


def test_a_teacher_that_returns_probabilities_is_refused_before_training():
  w = _weights()
  teacher = distill.Teacher.from_function(lambda x: jax.nn.softmax(x @ w), num_classes=3)
  with pytest.raises(distill.DistillError, match='returns probabilities.*not logits'):
    teacher.check(_sample(), 3)
  # Without concrete inputs only the shapes can be checked.
  teacher.check(jax.ShapeDtypeStruct((8, 5), jnp.float32), 3)


def test_a_teacher_with_nan_outputs_is_refused_naming_the_row():
  w = _weights()
  teacher = distill.Teacher.from_function(lambda x: jnp.log(x[:, :1] + 0.5) + x @ w,
                                          num_classes=3)
  sample = np.abs(_sample())
  sample[3, 0] = -1.0  # log(-0.5): NaN
  with pytest.raises(distill.DistillError, match=r'logits row 3 has nan'):
    teacher.check(sample, 3)

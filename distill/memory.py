"""Per-device memory of the students' step at a variant's real batch and mesh.

    config.rehearsal.memory = {'step': 'distill.memory:student_step', 'loop': 'loop',
                               'model': 'datasets.cifar100.model', 'input_shape': (32, 32, 3),
                               'num_classes': 100, 'num_examples': 50_000}

The largest run of the experiment is a regime's students: 3 x seeds models of one common.ensemble
run (distill/training.py), spread over the mesh's 'model' axis, each at loop.batch_size, with the
training set on every device. common.memory.ensemble_step compiles that ensemble's step ahead of
time; the students also hold their teachers: the stack of `seeds` teachers' variables, closed
over by the loss (distill.Teacher.from_models), is a constant of the compiled step on every
device, and is added here from its shapes. Not in the figure: the teacher's forward pass inside
the step (inference, no activations kept for a backward pass).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections

from common import config_lib
from common import memory
from common import models

ROLES = 3  # students per seed: one-hot, distilled, late (distill.experiment.STUDENT_ROLES)


def teacher_stack_bytes(model_config, input_shape, num_classes: int, seeds: int) -> int:
  """Bytes of `seeds` teachers' variables (parameters and batch statistics), stacked."""
  model = models.build(model_config, num_classes)
  sample = jax.ShapeDtypeStruct((1,) + tuple(input_shape), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), sample)
  return memory.tree_bytes(variables) * int(seeds)


def student_step(config: ml_collections.ConfigDict, spec, devices=None) -> memory.Estimate:
  """common.memory.Estimate of the students' ensemble step (3 x config.seeds models) with the
  teacher stack every device holds."""
  seeds = int(config.seeds)
  ensemble_spec = ml_collections.ConfigDict(dict(spec))
  ensemble_spec.step = 'ensemble'
  ensemble_spec.num_models = ROLES * seeds
  estimate = memory.step_memory(config, ensemble_spec, devices)
  stack = teacher_stack_bytes(config_lib.field(config, spec.model), spec.input_shape, spec.num_classes, seeds)
  return dataclasses.replace(
      estimate, other_arguments=estimate.other_arguments + stack,
      note=f'distill students: {estimate.note}; + the stack of {seeds} teachers '
           f'({stack / memory.GiB:.2f} GiB, a constant of the step on every device)')

"""Per-device memory of IWeS on accelerators: the step that trains every run's pair of models.

    rehearsal.memory = {'step': 'iwes.memory:selection_step', 'dataset': 'cifar10',
                        'num_examples': 45_000, 'input_shape': (32, 32, 3), 'num_classes': 10}

Each round, selection.train_pairs trains 2 x methods x seeds models at once with common.ensemble:
the models spread over the mesh's 'model' axis, every device holds the state of its share of
them and the whole pool (the weights pick each model's examples), and the step runs in
dispatches of `config.chunk_size` models per device (0: all of a device's models at once, which
is common.ensemble's choice on accelerators), batched with vmap. `selection_step` compiles that
step ahead of time (common.memory) at the real dispatch, with the model and the loss the run
builds (selection.per_example_loss), and counts the state of the device's other models from
their shapes.
Evaluation (selection.predict: batches of 1,024 inputs, in groups of the step's dispatch, each
from a gathered copy of its models' variables) is compiled too; it runs
while the state is held, so the figure counts the state plus the larger of the step's
temporaries and the evaluation's (copy, temporaries and outputs).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from common import config_lib
from common import ensemble_step
from common import memory as memory_lib
from common import mesh as mesh_lib
from common import models
from common import train as train_lib
from iwes import selection

P = jax.sharding.PartitionSpec
PREDICT_BATCH = 1024  # selection.predict's batch


def dispatch(num_models: int, ways: int, chunk_size: int) -> tuple[int, int]:
  """(models per device, models per device in one dispatch) as common.ensemble_plan plans them
  on accelerators (chunk_size 0: all of a device's models)."""
  if num_models % ways:
    raise config_lib.ConfigError(
        f'{num_models} models (2 x methods x seeds) do not divide over the {ways}-way model axis.')
  per_device = num_models // ways
  return per_device, min(chunk_size or per_device, per_device)


def selection_step(config: ml_collections.ConfigDict, spec: ml_collections.ConfigDict,
                   devices=None) -> memory_lib.Estimate:
  """The estimate of one round's training step (see the module docstring) for the dataset
  spec.dataset (default: the first of config.dataset_names) at its real loop batch and mesh."""
  name = spec.get('dataset') or config.dataset_names[0]
  ds = config.datasets[name]
  loop = ds.loop
  num_models = 2 * len(config.method_names) * int(config.seeds)
  shape, n = tuple(spec.input_shape), int(spec.num_examples)
  mesh = mesh_lib.make_mesh(loop.mesh, devices or jax.devices())
  ways = dict(mesh.shape).get('model', 1)
  per_device, chunk = dispatch(num_models, ways, int(config.chunk_size))
  k = chunk * ways  # models in one dispatch, over all devices

  model = models.build(ds.model, int(spec.num_classes))
  sample = jnp.zeros((1,) + shape, jnp.float32)
  tx = train_lib.make_optimizer(loop.optimizer, 1000)
  one = jax.eval_shape(lambda r: ensemble_step.init_one(
      lambda rng: model.init(rng, sample, train=False), tx, r), jax.random.key(0))
  on_models = jax.sharding.NamedSharding(mesh, P('model'))
  replicated = mesh_lib.replicated(mesh)
  stack = lambda tree, m: jax.tree.map(
      lambda a: jax.ShapeDtypeStruct((m,) + a.shape, a.dtype, sharding=on_models), tree)
  state = ensemble_step.EnsembleState(
      step=jax.ShapeDtypeStruct((), jnp.int32, sharding=replicated), params=stack(one[0], k),
      opt_state=stack(one[1], k), model_state=stack(one[2], k),
      nonfinite_step=jax.ShapeDtypeStruct((k,), jnp.int32, sharding=on_models))
  data = {'inputs': jax.ShapeDtypeStruct((n,) + shape, jnp.float32, sharding=replicated),
          'label': jax.ShapeDtypeStruct((n,), jnp.int32, sharding=replicated)}
  weights = jax.ShapeDtypeStruct((k, n), jnp.float32, sharding=on_models)
  # The indices of the coming steps (train_ensemble's steps_per_dispatch = 64 of them).
  indices = jax.ShapeDtypeStruct((64, k, loop.batch_size), jnp.int32,
                                 sharding=jax.sharding.NamedSharding(mesh, P(None, 'model')))
  step = ensemble_step.make_step(selection.per_example_loss(model), tx, loop.seed + 1,
                                 batched=True, model_axis='model')
  with jax.set_mesh(mesh):
    args, outs, alias, temps = memory_lib.compiled_memory(
        jax.jit(step, donate_argnums=(0,)), state, data, weights, indices, 0, 0, {}, {})
    evaluation = _predict_bytes(model, one, k, shape, on_models)

  params, opt, model_state = (memory_lib.tree_bytes(t) for t in one)
  if chunk == per_device:  # one group: selection.predict reads the state itself, not a copy
    evaluation -= per_device * (params + model_state)
  others = per_device - chunk  # the device's models in other dispatches: their state and weights
  other_arguments = max(0, args - chunk * (params + opt)) + others * (model_state + 4 * n)
  note = (f'IWeS round (common.ensemble, vmap): {num_models} models, {per_device} per device in '
          f'dispatches of {chunk}, batch {loop.batch_size} each, the pool ({n} x {shape}) on '
          f'every device, mesh {dict(mesh.shape)}; step temporaries {temps / memory_lib.GiB:.2f} '
          f'GiB; evaluation ({k} models x {PREDICT_BATCH} inputs per call) '
          f'{evaluation / memory_lib.GiB:.2f} GiB (its copy of the variables, temporaries and '
          'outputs); the larger is counted')
  return memory_lib.Estimate(params=params * per_device, optimizer=opt * per_device,
                             other_arguments=other_arguments, outputs=max(0, outs - alias),
                             temporaries=max(temps, evaluation), devices=mesh.size, note=note)


def _predict_bytes(model, one, num_models: int, shape, on_models) -> int:
  """Bytes per device of selection.predict_program over `num_models` models (the variables it
  is given, a copy that selection.predict gathers, plus its temporaries and outputs) at its
  batch of PREDICT_BATCH inputs."""
  variables = {'params': one[0], **one[2]}
  stacked = jax.tree.map(lambda a: jax.ShapeDtypeStruct((num_models,) + a.shape, a.dtype,
                                                        sharding=on_models), variables)
  inputs = jax.ShapeDtypeStruct((PREDICT_BATCH,) + shape, jnp.float32,
                                sharding=mesh_lib.replicated(on_models.mesh))
  program = selection.predict_program(lambda v, x: model.apply(v, x, train=False),
                                      on_models.mesh)
  args, outs, _, temps = memory_lib.compiled_memory(program, stacked, inputs)
  return args + outs + temps

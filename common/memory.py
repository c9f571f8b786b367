"""Per-device memory of a training step, from XLA's ahead-of-time compilation.

    estimate = memory.step_memory(config, config.rehearsal.memory)

The step is lowered at the run's real global batch and mesh with abstract inputs (nothing is
allocated), compiled for the devices at hand (on CPU: fake devices, JAX_NUM_CPU_DEVICES), and
read with `compiled.memory_analysis()`: per device, the arguments (parameters, optimizer state,
the batch), the outputs not aliased onto donated arguments, and XLA's temporaries (activations
kept for the backward pass, gradients, workspace).

What it can tell: the state's share is exact (it is the sharded shapes); the temporaries are
those of the same program compiled for CPU. What it cannot: accelerator compilers fuse,
rematerialise and lay out buffers differently (and reserve their own workspace), so on a TPU or
GPU the temporaries differ, usually downward for fused convolutions; data-pipeline buffers,
fragmentation and the runtime's reservation (e.g. the XLA GPU client's preallocation) are not
in it. Treat a figure within ~30% of a device's memory as "try it", not "fits".
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from common import mesh as mesh_lib
from common import models
from common import train as train_lib

GiB = 2**30
# Memory per chip of the devices researchers queue on (HBM).
DEVICES = (('v5e', 16 * GiB), ('v4', 32 * GiB), ('H100', 80 * GiB))


@dataclasses.dataclass(frozen=True)
class Estimate:
  """Bytes per device of one compiled step (the largest over devices)."""
  params: int
  optimizer: int
  other_arguments: int   # the batch, model state (batch-norm statistics), data held on device
  outputs: int           # outputs not written over donated arguments
  temporaries: int
  devices: int
  note: str = ''

  @property
  def total(self) -> int:
    return self.params + self.optimizer + self.other_arguments + self.outputs + self.temporaries

  def fits(self) -> list[str]:
    return [name for name, size in DEVICES if self.total <= size]

  def describe(self) -> str:
    fits = self.fits()
    where = f'fits {", ".join(fits)}' if fits else 'fits none of ' + ', '.join(
        f'{n} ({s // GiB} GiB)' for n, s in DEVICES)
    return (f'{self.total / GiB:.2f} GiB/device over {self.devices} devices (params '
            f'{self.params / GiB:.2f} + optimizer {self.optimizer / GiB:.2f} + other arguments '
            f'{self.other_arguments / GiB:.2f} + outputs {self.outputs / GiB:.2f} + temporaries '
            f'{self.temporaries / GiB:.2f}); {where}')

  def to_dict(self) -> dict[str, Any]:
    return dict(dataclasses.asdict(self), total=self.total, fits=self.fits())


def shard_bytes(abstract, shardings) -> int:
  """Bytes of the largest shard of a tree of abstract arrays under their shardings."""
  total = 0
  for leaf, sharding in zip(jax.tree.leaves(abstract), jax.tree.leaves(
      shardings, is_leaf=lambda s: isinstance(s, jax.sharding.Sharding))):
    shape = sharding.shard_shape(leaf.shape) if leaf.shape else ()
    total += int(np.prod(shape, dtype=np.int64)) * np.dtype(leaf.dtype).itemsize
  return total


def compiled_memory(jitted, *args) -> tuple[int, int, int, int]:
  """(argument, output, alias, temporary) bytes per device of jitted(*args) compiled ahead of
  time; args are abstract (jax.ShapeDtypeStruct with shardings)."""
  stats = jitted.lower(*args).compile().memory_analysis()
  if stats is None:
    raise RuntimeError(f'{jax.default_backend()} gives no memory analysis of compiled programs.')
  return (stats.argument_size_in_bytes, stats.output_size_in_bytes, stats.alias_size_in_bytes,
          stats.temp_size_in_bytes)


def _abstract(tree, shardings):
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      tree, shardings)


def _cross_entropy(model, num_classes):
  """Per-example softmax cross-entropy (what every classifier here trains on)."""

  def per_example(params, model_state, batch, rng):
    mutable = list(model_state.keys())
    out = model.apply({'params': params, **model_state}, batch['inputs'], train=True,
                      rngs={'dropout': rng}, mutable=mutable or False)
    logits, new_state = out if mutable else (out, model_state)
    losses = -jnp.sum(jax.nn.log_softmax(logits) * jax.nn.one_hot(batch['label'], num_classes),
                      -1)
    return losses, ({}, dict(new_state))

  return per_example


def train_step(loop: ml_collections.ConfigDict, init_fn, loss_fn, batch: dict[str, Any],
               devices=None, note: str = '') -> Estimate:
  """The common loop's update (common.train.make_train_step) of any model: `init_fn(rng)` gives
  its variables, `loss_fn(params, model_state, batch, rng)` its (loss, (metrics, model_state)),
  as handed to common.train.train; `batch` maps each field to (global shape, dtype). Compiled at
  loop.batch_size's global shapes over loop.mesh with loop.sharding, the batch split over the
  mesh's data axes as the loop feeds it. A paper whose step is its own writes a function
  `(config, spec, devices) -> Estimate` around this and names it in `rehearsal.memory.step` as
  'package.module:function'."""
  mesh = mesh_lib.make_mesh(loop.mesh, devices or jax.devices())
  rules = mesh_lib.rules_from_config(loop)
  tx = train_lib.make_optimizer(loop.optimizer, 1000)
  abstract, shardings = train_lib.state_shardings(init_fn, tx, jax.random.key(0), mesh, rules)
  step = train_lib.make_train_step(loss_fn, tx, 0)
  batch_sharding = mesh_lib.batch_sharding(mesh, rules)
  abstract_batch = {k: jax.ShapeDtypeStruct(tuple(shape), dtype, sharding=batch_sharding)
                    for k, (shape, dtype) in batch.items()}
  jitted = jax.jit(step, donate_argnums=(0,),
                   out_shardings=(shardings, mesh_lib.replicated(mesh)))
  with jax.set_mesh(mesh):
    args, outs, alias, temps = compiled_memory(jitted, _abstract(abstract, shardings),
                                               abstract_batch)
  params = shard_bytes(abstract.params, shardings.params)
  opt = shard_bytes(abstract.opt_state, shardings.opt_state)
  shapes = ', '.join(f'{k} {tuple(shape)}' for k, (shape, _) in batch.items())
  return Estimate(params=params, optimizer=opt, other_arguments=max(0, args - params - opt),
                  outputs=max(0, outs - alias), temporaries=temps, devices=mesh.size,
                  note=(note or 'common.train step') + f', batch {shapes}, mesh {dict(mesh.shape)}')


def classifier_step(loop: ml_collections.ConfigDict, model_config, input_shape: Sequence[int],
                    num_classes: int, devices=None) -> Estimate:
  """The common loop's update (common.train) of `model_config` at loop.batch_size over
  loop.mesh with loop.sharding, as common.classifier trains it."""
  model = models.build(model_config, num_classes)
  sample = jnp.zeros((1,) + tuple(input_shape), jnp.float32)
  per_example = _cross_entropy(model, num_classes)

  def loss_fn(params, model_state, batch, rng):
    losses, aux = per_example(params, model_state, batch, rng)
    return jnp.mean(losses), aux

  batch = {'inputs': ((loop.batch_size,) + tuple(input_shape), jnp.float32),
           'label': ((loop.batch_size,), jnp.int32)}
  return train_step(loop, lambda rng: model.init(rng, sample, train=False), loss_fn, batch,
                    devices, note='common.train step')


def tree_bytes(tree) -> int:
  """Bytes of every array (or ShapeDtypeStruct) of `tree`, whole (not per device)."""
  return sum(int(np.prod(a.shape, dtype=np.int64)) * np.dtype(a.dtype).itemsize
             for a in jax.tree.leaves(tree))


def ensemble_train_step(loop: ml_collections.ConfigDict, init_fn, loss_fn,
                        data: dict[str, Any], num_models: int, devices=None, *,
                        model_axis: str = 'model', note: str = 'common.ensemble step') -> Estimate:
  """common.ensemble's update on an accelerator (models batched with vmap, each device running
  its own under shard_map) of any model: `init_fn(rng)` its variables, `loss_fn(params,
  model_state, batch, rng)` its per-example (losses, (metrics, model_state)), as handed to
  common.ensemble.train_ensemble; `data` maps each field of the training set, which every device
  holds, to (global shape, dtype). `num_models` models spread over the mesh's `model_axis`, each
  at loop.batch_size.

  Compiled for one model per device (the smallest dispatch); the state of all the models a
  device holds (num_models / model ways) is counted from their shapes, and a dispatch of c models
  per device has about c times the temporaries reported.
  """
  from common import ensemble_step as step_lib  # pylint: disable=g-import-not-at-top
  num_examples = {shape[0] for shape, _ in data.values()}
  if len(num_examples) != 1:
    raise ValueError(f'The fields of `data` hold different numbers of examples: {data}.')
  mesh = mesh_lib.make_mesh(loop.mesh, devices or jax.devices())
  ways = dict(mesh.shape).get(model_axis, 1)
  tx = train_lib.make_optimizer(loop.optimizer, 1000)

  def init(rng):
    params, opt_state, model_state = step_lib.init_one(init_fn, tx, rng)
    return step_lib.EnsembleState(step=jnp.zeros((), jnp.int32), params=params,
                                  opt_state=opt_state, model_state=model_state,
                                  nonfinite_step=jnp.full((), -1, jnp.int32))

  one = jax.eval_shape(init, jax.random.key(0))
  stacked = lambda tree, k: jax.tree.map(
      lambda a: jax.ShapeDtypeStruct((k,) + a.shape, a.dtype), tree)
  state = step_lib.EnsembleState(
      step=one.step, params=stacked(one.params, ways), opt_state=stacked(one.opt_state, ways),
      model_state=stacked(one.model_state, ways), nonfinite_step=stacked(one.nonfinite_step, ways))
  on_models = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(model_axis))
  replicated = mesh_lib.replicated(mesh)
  shardings = jax.tree.map(lambda a: on_models if a.shape else replicated, state)
  arrays = {k: jax.ShapeDtypeStruct(tuple(shape), dtype, sharding=replicated)
            for k, (shape, dtype) in data.items()}
  weights = jax.ShapeDtypeStruct((ways, *num_examples), jnp.float32, sharding=on_models)
  indices = jax.ShapeDtypeStruct((1, ways, loop.batch_size), jnp.int32,
                                 sharding=jax.sharding.NamedSharding(
                                     mesh, jax.sharding.PartitionSpec(None, model_axis)))
  step = step_lib.make_step(loss_fn, tx, 0, batched=True, model_axis=model_axis)
  jitted = jax.jit(step, donate_argnums=(0,), static_argnums=(5,),
                   out_shardings=(shardings, on_models))
  with jax.set_mesh(mesh):
    args, outs, alias, temps = compiled_memory(
        jitted, _abstract(state, shardings), arrays, weights, indices,
        jax.ShapeDtypeStruct((), jnp.int32, sharding=replicated), 0)
  per_device = -(-num_models // ways)
  params, opt = tree_bytes(one.params), tree_bytes(one.opt_state)
  one_model = params + opt + tree_bytes(one.model_state)
  return Estimate(params=params * per_device, optimizer=opt * per_device,
                  other_arguments=max(0, args - one_model) + tree_bytes(one.model_state) * (
                      per_device - 1),
                  outputs=max(0, outs - alias), temporaries=temps, devices=mesh.size,
                  note=(f'{note} (vmap), {num_models} models, {per_device} per device, batch '
                        f'{loop.batch_size} each, mesh {dict(mesh.shape)}; temporaries of a '
                        '1-model-per-device dispatch'))


def ensemble_step(loop: ml_collections.ConfigDict, model_config, input_shape: Sequence[int],
                  num_classes: int, num_models: int, num_examples: int,
                  devices=None) -> Estimate:
  """ensemble_train_step of `model_config` under the cross-entropy, as the papers' classifier
  ensembles train it: `num_examples` images of `input_shape` on every device."""
  model = models.build(model_config, num_classes)
  sample = jnp.zeros((1,) + tuple(input_shape), jnp.float32)
  data = {'inputs': ((num_examples,) + tuple(input_shape), jnp.float32),
          'label': ((num_examples,), jnp.int32)}
  return ensemble_train_step(loop, lambda r: model.init(r, sample, train=False),
                             _cross_entropy(model, num_classes), data, num_models, devices)


def _get(config: ml_collections.ConfigDict, dotted: str):
  out = config
  for part in [p for p in dotted.split('.') if p]:
    out = out[part]
  return out


def step_memory(config: ml_collections.ConfigDict, spec: ml_collections.ConfigDict,
                devices=None) -> Estimate:
  """The estimate a variant's rehearsal section declares (`rehearsal.memory`):

    step: 'classifier' (common.train), 'ensemble' (common.ensemble), or a paper's own step:
      'package.module:function', a function (config, spec, devices) -> Estimate (see train_step)
    loop, model: dotted names of the loop config and the model config in `config` ('' is the
      config itself); model_fields: (field, value) pairs set on the model (e.g. the sweep's
      largest width)
    input_shape, num_classes; for 'ensemble' also num_models and num_examples.
  """
  if spec.step not in ('classifier', 'ensemble'):
    return _paper_step(spec.step)(config, spec, devices)
  loop = _get(config, spec.loop)
  model_config = ml_collections.ConfigDict(_get(config, spec.model).to_dict())
  for field, value in spec.get('model_fields', ()) or ():
    model_config[field] = value
  if spec.step == 'classifier':
    return classifier_step(loop, model_config, spec.input_shape, spec.num_classes, devices)
  return ensemble_step(loop, model_config, spec.input_shape, spec.num_classes,
                       spec.num_models, spec.num_examples, devices)


def _paper_step(name: str):
  """The function `(config, spec, devices) -> Estimate` that 'package.module:function' names."""
  import importlib  # pylint: disable=g-import-not-at-top
  module_name, _, function = str(name).partition(':')
  if not module_name or not function:
    raise ValueError(f"rehearsal.memory.step={name!r}: use 'classifier', 'ensemble' or "
                     "'package.module:function' (a function (config, spec, devices) -> Estimate).")
  try:
    fn = getattr(importlib.import_module(module_name), function)
  except (ImportError, AttributeError) as e:
    raise ValueError(f'rehearsal.memory.step={name!r}: {e}') from None
  if not callable(fn):
    raise ValueError(f'rehearsal.memory.step={name!r} is not a function.')
  return fn

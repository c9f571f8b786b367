"""The device mesh from the config and the rules that map logical axes to mesh axes.

`config.mesh` is a tuple of (axis name, size) pairs, one size may be -1 to take the remaining
devices: `(('data', -1), ('model', 1))`. Axes are always `AxisType.Auto` (jax's default, Explicit,
breaks logical sharding). `config.sharding` names a strategy or gives the rules themselves.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from absl import logging
import flax.linen as nn
import jax
import numpy as np

from common import config_lib

P = jax.sharding.PartitionSpec
Rules = tuple[tuple[str, Any], ...]

# Logical axis names used by common/models (and by papers' own modules):
#   batch     the example axis of activations and batches
#   embed     the model-width dimension (d_model, the input side of a dense kernel)
#   mlp       hidden dimension of an MLP block (the output side of an up-projection)
#   heads     attention heads;  kv  per-head features;  vocab  token embeddings / logits
#   classes   the output classes of a classifier
#   conv_in / conv_out   input / output channels of a convolution;  spatial  kernel taps
STRATEGIES: dict[str, Rules] = {
    # Everything replicated; batches still split over 'data'.
    'replicated': (('batch', 'data'),),
    'data': (('batch', 'data'),),
    # Fully sharded data parallel: parameters split over 'data' along one dimension.
    'fsdp': (('batch', 'data'), ('embed', 'data'), ('conv_in', 'data')),
    # Tensor parallel over 'model' for hidden units, heads and output channels.
    'tensor': (('batch', 'data'), ('mlp', 'model'), ('heads', 'model'), ('conv_out', 'model'),
               ('vocab', 'model')),
    'fsdp_tensor': (('batch', 'data'), ('embed', 'data'), ('conv_in', 'data'), ('mlp', 'model'),
                    ('heads', 'model'), ('conv_out', 'model'), ('vocab', 'model')),
}


def resolve_shape(spec: Sequence[tuple[str, int]], num_devices: int) -> tuple[tuple[str, int], ...]:
  """Fills in the -1 entry of a mesh spec and checks the product against the device count."""
  spec = tuple((str(name), int(size)) for name, size in spec)
  if not spec:
    raise config_lib.ConfigError('config.mesh is empty; use e.g. (("data", -1),).')
  names = [n for n, _ in spec]
  if len(set(names)) != len(names):
    raise config_lib.ConfigError(f'config.mesh repeats an axis name: {names}.')
  free = [i for i, (_, s) in enumerate(spec) if s == -1]
  if len(free) > 1:
    raise config_lib.ConfigError(f'config.mesh may have at most one -1 size: {spec}.')
  if any(s == 0 or s < -1 for _, s in spec):
    raise config_lib.ConfigError(f'config.mesh sizes must be positive or -1: {spec}.')
  fixed = math.prod(s for _, s in spec if s != -1)
  if free:
    if num_devices % fixed:
      raise config_lib.ConfigError(
          f'config.mesh {spec} does not fit {num_devices} devices: the fixed axes need a '
          f'multiple of {fixed}.')
    spec = tuple((n, num_devices // fixed if s == -1 else s) for n, s in spec)
  elif fixed != num_devices:
    raise config_lib.ConfigError(
        f'config.mesh {spec} has {fixed} devices but {num_devices} are in use; make the sizes '
        f'multiply to {num_devices}, set one size to -1, or set config.num_devices.')
  return spec


def select_devices(num_devices: int = -1) -> list[jax.Device]:
  devices = jax.devices()
  if num_devices in (-1, None):
    return devices
  if not 1 <= num_devices <= len(devices):
    raise config_lib.ConfigError(
        f'config.num_devices={num_devices} but {len(devices)} devices are visible.')
  if jax.process_count() > 1 and num_devices != len(devices):
    raise config_lib.ConfigError('config.num_devices must be -1 when running on several processes.')
  return devices[:num_devices]


def make_mesh(spec: Sequence[tuple[str, int]] = (('data', -1),),
              devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
  """A mesh with Auto axes over `devices` (default: all)."""
  devices = list(devices) if devices is not None else jax.devices()
  shape = resolve_shape(spec, len(devices))
  names = tuple(n for n, _ in shape)
  sizes = tuple(s for _, s in shape)
  auto = (jax.sharding.AxisType.Auto,) * len(names)
  if len(devices) == len(jax.devices()):
    return jax.make_mesh(sizes, names, axis_types=auto, devices=devices)
  return jax.sharding.Mesh(np.asarray(devices).reshape(sizes), names, axis_types=auto)


def mesh_from_config(config) -> jax.sharding.Mesh:
  mesh = make_mesh(config.get('mesh', (('data', -1),)),
                   select_devices(config.get('num_devices', -1)))
  logging.info('Mesh: %s over %d devices (%d processes)', dict(mesh.shape), mesh.size,
               jax.process_count())
  return mesh


def rules_from_config(config) -> Rules:
  """`config.sharding_rules` ((logical, mesh axis), ...) when set, else `config.sharding`: a
  strategy name from STRATEGIES (or the rules themselves, where the config allows a tuple)."""
  if config.get('sharding_rules') is not None:
    return tuple((str(k), v) for k, v in config.sharding_rules)
  sharding = config.get('sharding', 'data')
  if isinstance(sharding, str):
    if sharding not in STRATEGIES:
      raise config_lib.ConfigError(
          f'Unknown sharding strategy {sharding!r}{config_lib.closest(sharding, STRATEGIES)}; '
          f'available: {sorted(STRATEGIES)}.')
    return STRATEGIES[sharding]
  return tuple((str(k), v) for k, v in sharding)


def check_rules(rules: Rules, mesh: jax.sharding.Mesh) -> None:
  """Every mesh axis a rule names exists in `mesh` (a misspelt axis would replicate silently)."""
  for logical, mesh_axes in rules:
    axes = (mesh_axes,) if isinstance(mesh_axes, str) else tuple(mesh_axes or ())
    for axis in axes:
      if axis not in mesh.shape:
        raise config_lib.ConfigError(
            f'Sharding rule ({logical!r}, {mesh_axes!r}) names mesh axis {axis!r}'
            f'{config_lib.closest(axis, mesh.shape)}, but the mesh has axes {dict(mesh.shape)}; '
            'fix config.sharding or add the axis to config.mesh (size 1 is fine).')


def _mesh_axes_for(name, rules: Rules):
  if name is None:
    return None
  for logical, mesh_axes in rules:
    if logical == name:
      return mesh_axes
  return None


def logical_to_sharding(logical: P | None, shape: Sequence[int], mesh: jax.sharding.Mesh,
                        rules: Rules) -> jax.sharding.NamedSharding:
  """Maps one array's logical PartitionSpec to a NamedSharding on `mesh`.

  A dimension that does not divide over its mesh axes, or whose mesh axis is already used by an
  earlier dimension, or that names an axis the mesh does not have, stays replicated.
  """
  if logical is None:
    return jax.sharding.NamedSharding(mesh, P())
  used: set[str] = set()
  out = []
  for dim, name in zip(shape, tuple(logical) + (None,) * (len(shape) - len(logical))):
    axes = _mesh_axes_for(name, rules)
    axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
    axes = tuple(a for a in axes if a in mesh.shape and mesh.shape[a] > 1 and a not in used)
    size = math.prod(mesh.shape[a] for a in axes)
    if not axes or dim % size:
      out.append(None)
      continue
    used.update(axes)
    out.append(axes[0] if len(axes) == 1 else axes)
  while out and out[-1] is None:
    out.pop()
  return jax.sharding.NamedSharding(mesh, P(*out))


def tree_shardings(abstract_boxed, mesh: jax.sharding.Mesh, rules: Rules):
  """Shardings for a tree whose leaves may be flax `LogicallyPartitioned` boxes.

  Returns a tree with the same structure as the *unboxed* tree.
  """
  specs = nn.get_partition_spec(abstract_boxed)
  unboxed = nn.meta.unbox(abstract_boxed)
  return jax.tree.map(lambda spec, x: logical_to_sharding(spec, x.shape, mesh, rules),
                      specs, unboxed, is_leaf=lambda s: isinstance(s, P) or s is None)


def replicated(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
  return jax.sharding.NamedSharding(mesh, P())


def batch_sharding(mesh: jax.sharding.Mesh, rules: Rules = STRATEGIES['data']):
  """Splits the leading (example) axis over the mesh axes mapped from 'batch'."""
  axes = _mesh_axes_for('batch', rules) or ()
  axes = (axes,) if isinstance(axes, str) else tuple(axes)
  axes = tuple(a for a in axes if a in mesh.shape)
  return jax.sharding.NamedSharding(mesh, P(axes if len(axes) != 1 else axes[0]) if axes else P())


def batch_axis_size(mesh: jax.sharding.Mesh, rules: Rules = STRATEGIES['data']) -> int:
  spec = batch_sharding(mesh, rules).spec
  if not spec or spec[0] is None:
    return 1
  axes = (spec[0],) if isinstance(spec[0], str) else spec[0]
  return math.prod(mesh.shape[a] for a in axes)


def fetch(tree):
  """Every array of `tree` as a numpy array holding its global value, on every process.

  One process's devices hold only its shards of an array split over a mesh that spans several
  processes (a model axis over 2 hosts): `jax.device_get` refuses it, so such an array is
  gathered from all processes (a collective: every process calls `fetch` in the same order, as
  SPMD code does). A fully addressable or fully replicated array is read where it is.
  """
  def one(x):
    if isinstance(x, jax.Array) and not (x.is_fully_addressable or x.is_fully_replicated):
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x)) if isinstance(x, jax.Array) else x

  return jax.tree.map(one, tree)

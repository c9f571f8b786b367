"""Checkpoints through orbax: the train state, the data position and a model fingerprint.

Restores go onto abstract targets (`jax.ShapeDtypeStruct` with the *current* shardings), so a run
saved on 8 devices resumes on 1, or on a 2x4 data x model mesh. orbax writes each step to a
temporary directory and renames it when complete, so a crash (even SIGKILL) mid-save leaves the
previous step intact; incomplete directories are ignored and cleaned up on the next start.
"""

from __future__ import annotations

import os
from typing import Any

from absl import flags
from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp


class CheckpointMismatchError(ValueError):
  """The workdir holds a checkpoint of a different model or run."""


def abstract_like(tree, shardings):
  """ShapeDtypeStructs carrying `shardings`: the restore target."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)


def fingerprint(tree) -> dict[str, list]:
  """{path: [shape, dtype]} of every leaf; two runs with the same fingerprint can share a state."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(path): [list(x.shape), str(np.dtype(x.dtype))]
          for path, x in leaves}


def describe_mismatch(saved: dict, current: dict, limit: int = 5) -> str:
  lines = []
  keys = sorted(set(saved) | set(current), key=lambda k: (not k.startswith('.params'), k))
  for key in keys:
    if saved.get(key) != current.get(key):
      lines.append(f'  {key}: checkpoint {saved.get(key)} vs model {current.get(key)}')
  more = f'\n  ... and {len(lines) - limit} more' if len(lines) > limit else ''
  return '\n'.join(lines[:limit]) + more


class Checkpointer:
  """Saves every `save_every_steps` (and when forced), keeps the newest `keep`."""

  def __init__(self, directory: str, *, save_every_steps: int, keep: int = 2,
               async_save: bool = True):
    self.directory = os.path.abspath(directory)
    if jax.process_count() > 1:
      # orbax's default barrier is a device collective; run while the training thread and the
      # input prefetcher also use the devices, it can deadlock. The coordinator's barrier cannot.
      flags.FLAGS['experimental_orbax_use_distributed_barrier'].value = True
    self.save_every_steps = max(1, int(save_every_steps))
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, enable_async_checkpointing=async_save, cleanup_tmp_directories=True,
        create=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def should_save(self, step: int) -> bool:
    return step % self.save_every_steps == 0

  def save(self, step: int, state, *, data_state: dict[str, Any], meta: dict[str, Any],
           force: bool = False) -> bool:
    if not force and not self.should_save(step):
      return False
    if step in self._manager.all_steps():
      return False
    return self._manager.save(
        step, force=True,
        args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                data=ocp.args.JsonSave(data_state),
                                meta=ocp.args.JsonSave(meta)))

  def restore_meta(self, step: int) -> tuple[dict, dict]:
    out = self._manager.restore(step, args=ocp.args.Composite(data=ocp.args.JsonRestore(),
                                                              meta=ocp.args.JsonRestore()))
    return out['data'], out['meta']

  def restore(self, step: int, abstract_state, *, meta: dict[str, Any] | None = None):
    """Restores onto `abstract_state` after checking the saved model matches it."""
    data_state, saved_meta = self.restore_meta(step)
    if meta is not None:
      saved = saved_meta.get('fingerprint', {})
      current = meta.get('fingerprint', {})
      if saved != current:
        raise CheckpointMismatchError(
            f'{self.directory} holds a checkpoint (step {step}) of a different model:\n'
            f'{describe_mismatch(saved, current)}\nUse a fresh --workdir, or the config that '
            'wrote it.')
    restored = self._manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))
    logging.info('Restored step %d from %s', step, self.directory)
    return restored['state'], data_state, saved_meta

  def restore_arrays(self, step: int | None = None):
    """The saved train state as host arrays, without a target (for analysis and tests)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'No checkpoint in {self.directory}.')
    restored = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    return jax.tree.map(np.asarray, restored['state'])

  def wait(self):
    self._manager.wait_until_finished()

  def close(self):
    self._manager.wait_until_finished()
    self._manager.close()

"""Checkpoints through orbax: the train state, the data position and a model fingerprint.

Restores go onto abstract targets (`jax.ShapeDtypeStruct` with the *current* shardings), so a run
saved on 8 devices resumes on 1, or on a 2x4 data x model mesh. orbax writes each step to a
temporary directory and renames it when complete, so a crash (even SIGKILL) mid-save leaves the
previous step intact; incomplete directories are ignored and cleaned up on the next start.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from absl import flags
from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp


class CheckpointMismatchError(ValueError):
  """The workdir holds a checkpoint of a different model or run."""


class CheckpointUnreadableError(RuntimeError):
  """No checkpoint in the directory can be read."""


WAYS_OUT = ('Use a fresh --workdir, or --config.resume_despite_changes=True to continue this '
            "checkpoint's state under the new values deliberately.")


def describe_changes(saved: dict, current: dict, limit: int = 12) -> str:
  """One line per field whose value differs: '  field: checkpoint X, now Y'."""
  missing = object()
  lines = [f'  {k}: checkpoint {saved.get(k, "(absent)")!r}, now {current.get(k, "(absent)")!r}'
           for k in sorted(set(saved) | set(current))
           if saved.get(k, missing) != current.get(k, missing)]
  more = f'\n  ... and {len(lines) - limit} more' if len(lines) > limit else ''
  return '\n'.join(lines[:limit]) + more


def _is_resource_error(error: Exception) -> bool:
  return isinstance(error, MemoryError) or 'RESOURCE_EXHAUSTED' in str(error)


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

  def check_meta(self, step: int, saved_meta: dict[str, Any], meta: dict[str, Any], *,
                 allow_changes: bool = False) -> None:
    """Refuses a checkpoint of another model, or of another run unless `allow_changes`.

    meta['fingerprint'] (parameter shapes) must match; meta['run'] (what determines the result)
    must match unless allow_changes; meta['total_steps'] may grow (the run continues) but not
    shrink.
    """
    saved = saved_meta.get('fingerprint', {})
    current = meta.get('fingerprint', {})
    if saved != current:
      raise CheckpointMismatchError(
          f'{self.directory} holds a checkpoint (step {step}) of a different model:\n'
          f'{describe_mismatch(saved, current)}\nUse a fresh --workdir, or the config that '
          'wrote it.')
    total = meta.get('total_steps')
    saved_total = saved_meta.get('total_steps')
    if total is not None and total < step:
      raise CheckpointMismatchError(
          f'{self.directory} holds a checkpoint at step {step}, past the {total} total steps '
          f'now asked for (the run was made for {saved_total}). Use a fresh --workdir, or '
          f'total_steps >= {step}.')
    if 'run' not in meta:
      return
    if 'run' not in saved_meta:
      logging.warning('The checkpoint at step %d in %s records no run identity (written before '
                      'runs were recorded); resuming without checking the config.', step,
                      self.directory)
      return
    changes = describe_changes(saved_meta['run'], meta['run'])
    if total is not None and saved_total is not None and total < saved_total:
      changes = f'  total_steps: checkpoint {saved_total}, now {total} (shorter)\n' + changes
    if not changes.strip():
      return
    if allow_changes:
      logging.warning('Resuming step %d of %s under changed values (resume_despite_changes):\n%s',
                      step, self.directory, changes)
      return
    raise CheckpointMismatchError(
        f'{self.directory} holds a checkpoint (step {step}) of a run made with other values '
        f'of the fields that determine its result:\n{changes.rstrip()}\nResuming would '
        f'continue the old state and label it with the new config. {WAYS_OUT}')

  def restore(self, step: int, abstract_state, *, meta: dict[str, Any] | None = None,
              allow_changes: bool = False):
    """Restores onto `abstract_state` after checking the saved model (and run) matches it."""
    data_state, saved_meta = self.restore_meta(step)
    if meta is not None:
      self.check_meta(step, saved_meta, meta, allow_changes=allow_changes)
    restored = self._manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))
    logging.info('Restored step %d from %s', step, self.directory)
    return restored['state'], data_state, saved_meta

  def restore_latest(self, abstract_state, *, meta: dict[str, Any] | None = None,
                     allow_changes: bool = False):
    """(step, state, data_state, saved_meta) of the newest readable checkpoint; None if none.

    A damaged step (a truncated array or metadata file, a missing item) is logged and moved to
    `<directory>.unreadable/<step>` once an older step restores, so the run continues from there
    and can save that step again. If no step is readable, CheckpointUnreadableError names the
    folder to remove. A mismatching config is never taken for damage: it stops the run.
    """
    failures = []

    def attempt(step, read):
      """read() or None when the step is damaged (logged and remembered)."""
      try:
        return read()
      except Exception as e:  # pylint: disable=broad-except
        if _is_resource_error(e):
          raise
        failures.append((step, e))
        logging.warning('Checkpoint step %d in %s is unreadable (%s: %s); trying an older one.',
                        step, self.directory, type(e).__name__, str(e)[:300])
        return None

    for step in sorted(self.all_steps(), reverse=True):
      saved = attempt(step, lambda s=step: self.restore_meta(s))
      if saved is None:
        continue
      data_state, saved_meta = saved
      if meta is not None:
        self.check_meta(step, saved_meta, meta, allow_changes=allow_changes)
      restored = attempt(step, lambda s=step: self._manager.restore(
          s, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))))
      if restored is None:
        continue
      self._set_aside([s for s, _ in failures])
      logging.info('Restored step %d from %s', step, self.directory)
      return step, restored['state'], data_state, saved_meta
    if failures:
      details = '\n'.join(f'  step {s}: {type(e).__name__}: {str(e)[:200]}' for s, e in failures)
      raise CheckpointUnreadableError(
          f'No checkpoint in {self.directory} can be read:\n{details}\nRemove that folder to '
          'train from scratch (or restore it from a copy).')
    return None

  def _set_aside(self, steps: list[int]) -> None:
    """Moves unreadable steps out of the manager's directory (kept for inspection)."""
    if not steps:
      return
    aside = self.directory.rstrip('/') + '.unreadable'
    if jax.process_index() == 0:
      os.makedirs(aside, exist_ok=True)
      for step in steps:
        target = os.path.join(aside, str(step))
        if os.path.exists(target):
          shutil.rmtree(target)
        shutil.move(os.path.join(self.directory, str(step)), target)
        logging.warning('Moved unreadable checkpoint step %d to %s.', step, target)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices('checkpoint_set_aside')
    self._manager.reload()

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

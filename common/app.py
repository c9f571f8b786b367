"""What every absl binary shares: --config and --workdir, multi-host start-up, logging, config.json.

A paper's main.py is three lines:

    from common import app
    from resmem import experiment
    if __name__ == '__main__':
      app.run(experiment.run)

`run(fn)` parses the flags, then calls `fn(config, workdir)`. TensorFlow is imported only by the
TFDS path (common.data.loader), which hides the accelerators from it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import Any, Callable

from absl import app as absl_app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file, optionally with a variant: configs/<paper>/<name>.py:cpu',
    lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where checkpoints, metrics and results go.')
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', None,
    'host:port of process 0 for multi-process runs; unset on one host, or where jax detects the '
    'cluster itself (Cloud TPU, SLURM, Open MPI), which --multiprocess turns on.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Processes in a multi-process run.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process in a multi-process run.')
_MULTIPROCESS = flags.DEFINE_bool(
    'multiprocess', False, 'Call jax.distributed.initialize() with cluster auto-detection.')


def initialize_distributed() -> None:
  """Joins a multi-process run when the flags (or --multiprocess) ask for it."""
  if _COORDINATOR.value:
    jax.distributed.initialize(_COORDINATOR.value, num_processes=_NUM_PROCESSES.value,
                               process_id=_PROCESS_ID.value)
  elif _MULTIPROCESS.value:
    jax.distributed.initialize()


def overrides(argv: list[str]) -> list[str]:
  """The --config.field=value flags of the command line."""
  return [a for a in argv if a.startswith('--config.')]


def config_record(config, argv: list[str]) -> dict[str, Any]:
  return {'config': json.loads(config.to_json_best_effort()), 'overrides': overrides(argv),
          'argv': argv, 'jax': jax.__version__, 'devices': jax.device_count(),
          'processes': jax.process_count()}


def _write_json(path: str, record: dict[str, Any]) -> None:
  tmp = path + '.tmp'
  with open(tmp, 'w', encoding='utf-8') as f:
    json.dump(record, f, indent=2)
  os.replace(tmp, path)


def save_config(config, workdir: str, argv: list[str]) -> bool:
  """Writes workdir/config.json unless it holds another config; returns whether it wrote.

  A workdir's config.json records the config that made its results: a rerun under another config
  (which the training loop may refuse) must not overwrite it first. `commit_config` replaces it
  once such a run has succeeded, keeping the old one as config.<k>.json.
  """
  if jax.process_index() != 0:
    return True
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, 'config.json')
  record = config_record(config, argv)
  if os.path.exists(path):
    try:
      with open(path, encoding='utf-8') as f:
        if json.load(f).get('config') != record['config']:
          return False
    except (OSError, ValueError):
      pass  # unreadable: replace it
  _write_json(path, record)
  return True


def commit_config(config, workdir: str, argv: list[str]) -> None:
  """After a successful run under a changed config: the old config.json becomes config.<k>.json."""
  if jax.process_index() != 0:
    return
  path = os.path.join(workdir, 'config.json')
  k = 1
  while os.path.exists(os.path.join(workdir, f'config.{k}.json')):
    k += 1
  if os.path.exists(path):
    os.replace(path, os.path.join(workdir, f'config.{k}.json'))
  _write_json(path, config_record(config, argv))


def run_recorded(fn: Callable[[Any, str], Any], config, workdir: str, argv: list[str]):
  """fn(config, workdir) with workdir/config.json recording the config of the results there."""
  written = save_config(config, workdir, argv)
  if not written:
    logging.info('%s/config.json holds another config; it is kept until this run succeeds.',
                 workdir)
  out = fn(config, workdir)
  if not written:
    commit_config(config, workdir, argv)
  return out


def log_environment(config) -> None:
  logging.info('jax %s, backend %s, process %d of %d, %d local / %d global devices',
               jax.__version__, jax.default_backend(), jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())
  logging.info('Devices: %s', jax.devices())
  logging.info('Config:\n%s', config)


class _QuietLibraries(logging.logging.Filter):
  """Drops INFO lines from orbax and absl-wrapped libraries; warnings and errors still show."""

  def filter(self, record):
    noisy = ('/orbax/', '/tensorstore/', '/etils/')
    return record.levelno > logging.logging.INFO or not any(n in record.pathname for n in noisy)


@contextlib.contextmanager
def compilation_cache(directory: str | None):
  """XLA's persistent compilation cache in `directory` for the block (None: off), jax's settings
  restored after. Studies that train many small models compile the same programs again and
  again (a new jit per run); on a CPU a compile costs seconds, often more than the training.
  The cache is keyed by the program, the compile options and the jax/XLA versions.
  jax opens the cache once per process: the first directory given is the one used."""
  if not directory:
    yield
    return
  names = ('jax_compilation_cache_dir', 'jax_persistent_cache_min_compile_time_secs',
           'jax_persistent_cache_min_entry_size_bytes')
  old = {n: getattr(jax.config, n) for n in names}
  os.makedirs(directory, exist_ok=True)
  jax.config.update('jax_compilation_cache_dir', directory)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
  try:
    yield
  finally:
    for n, v in old.items():
      jax.config.update(n, v)


def quiet_library_logs() -> None:
  handler = logging.get_absl_handler()
  if not any(isinstance(f, _QuietLibraries) for f in handler.filters):
    handler.addFilter(_QuietLibraries())


def run(fn: Callable[[Any, str], Any]) -> None:
  """absl entry point: flags -> distributed init -> logging -> fn(config, workdir)."""
  flags.mark_flags_as_required(['config', 'workdir'])

  def main(argv):
    if len(argv) > 1:
      raise absl_app.UsageError(f'Unexpected arguments: {argv[1:]}')
    quiet_library_logs()
    initialize_distributed()
    config, workdir = _CONFIG.value, os.path.abspath(os.path.expanduser(_WORKDIR.value))
    log_environment(config)
    run_recorded(fn, config, workdir, sys.argv)

  absl_app.run(main)

"""What every absl binary shares: --config and --workdir, multi-host start-up, logging, config.json,
the workdir's lock and the compilation cache.

A paper's main.py is three lines:

    from common import app
    from resmem import experiment
    if __name__ == '__main__':
      app.run(experiment.run, experiment.check_config)

`run(fn, check_config)` parses the flags (a `configs/...` path not found from the current
directory is read from the repository), checks the config (`check_config(config)`: before
anything runs), joins a multi-process run, locks the workdir (a second run in it stops with
"workdir in use by process N"), opens the compilation cache (--compilation_cache) and calls
`fn(config, workdir)`. TensorFlow is imported only by the TFDS path (common.data.loader), which
hides the accelerators from it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
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
_COMPILATION_CACHE = flags.DEFINE_string(
    'compilation_cache', '{workdir}/jax_cache',
    "XLA's persistent compilation cache for the run ({workdir} stands for --workdir); empty: "
    'off. A rerun compiles nothing it compiled before.')

# The repository root: a relative `configs/...` path not found from the current directory is
# read from here, so the READMEs' commands work from anywhere.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


# ---------------------------------------------------------------------------------------------
# The workdir's lock: one run at a time in a workdir.
# ---------------------------------------------------------------------------------------------
LOCK_FILE = 'workdir.lock'


class WorkdirInUseError(RuntimeError):
  """Another running process holds the workdir; the message names it and the lock file."""


_HELD: dict[str, int] = {}  # lock path -> how many times this process entered it


def _read_holder(fd: int) -> tuple[int | None, str]:
  """(pid, host) written in an open lock file; (None, '') when empty or unreadable."""
  os.lseek(fd, 0, os.SEEK_SET)
  parts = os.read(fd, 256).decode('utf-8', 'replace').split()
  if not parts or not parts[0].isdigit():
    return None, ''
  return int(parts[0]), parts[1] if len(parts) > 1 else ''


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # alive, another user's
    return True
  return True


def _take_lock(path: str) -> int:
  """Opens and locks `path` (fcntl.flock: the kernel drops it when its process dies, however it
  dies); returns its descriptor with this process's PID and host written in it."""
  workdir, host = os.path.dirname(path), socket.gethostname()
  while True:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno in (errno.ENOLCK, errno.EINVAL, errno.EOPNOTSUPP):
        logging.warning('%s: this file system cannot lock files; the PID in it guards it.', path)
      elif e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
        os.close(fd)
        raise
      else:
        pid, _ = _read_holder(fd)
        os.close(fd)
        holder = f'process {pid}' if pid is not None else 'another process'
        raise WorkdirInUseError(
            f'workdir in use by {holder}: {workdir} is locked ({path}). Wait for that run to '
            'end, or give this one another --workdir.') from None
    try:  # its holder may have released (removed) the file between our open and flock
      same = os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
      same = False
    if not same:
      os.close(fd)
      continue
    pid, pid_host = _read_holder(fd)
    if pid is not None and pid != os.getpid() and pid_host in ('', host) and _alive(pid):
      # Unlocked, yet its process runs: a file system without flock, or a PID reused since the
      # holder died. Two runs in one workdir corrupt its checkpoints; a stale file costs a rm.
      os.close(fd)
      raise WorkdirInUseError(
          f'workdir in use by process {pid}: {workdir} is locked ({path}). If process {pid} is '
          f'not a run in this workdir, delete {path}.')
    if pid is not None:
      logging.warning('Taking over the stale lock %s of process %d%s, which no longer holds it '
                      '(not running).', path, pid, f' on {pid_host}' if pid_host else '')
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, f'{os.getpid()} {host}\n'.encode())
    return fd


@contextlib.contextmanager
def workdir_lock(workdir: str):
  """Holds `workdir`/workdir.lock (with this process's PID) for the block, or raises
  WorkdirInUseError naming the process that holds it. A lock left by a process that died is
  taken over with a warning. In a multi-process run only process 0 takes it (the others share
  its workdir); a process may enter the lock it holds again."""
  if jax.process_index() != 0:
    yield
    return
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(os.path.abspath(workdir), LOCK_FILE)
  if path in _HELD:
    _HELD[path] += 1
    try:
      yield
    finally:
      _HELD[path] -= 1
    return
  fd = _take_lock(path)
  _HELD[path] = 1
  try:
    yield
  finally:
    del _HELD[path]
    try:
      os.remove(path)  # while still locked: a process waiting on this file sees it go
    finally:
      os.close(fd)


def run_recorded(fn: Callable[[Any, str], Any], config, workdir: str, argv: list[str]):
  """fn(config, workdir) with the workdir locked and workdir/config.json recording the config of
  the results there."""
  with workdir_lock(workdir):
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


def resolve_config_path(argv: list[str], cwd: str | None = None) -> list[str]:
  """argv with a relative --config path that does not exist from `cwd` (default: the current
  directory) but does in the repository (`configs/...`) made absolute, so that a README's
  command runs from any directory. Other arguments are returned as they are."""
  cwd = cwd or os.getcwd()

  def resolve(value: str) -> str:
    path, colon, variant = value.partition(':')
    if (not path or os.path.isabs(path) or os.path.exists(os.path.join(cwd, path))
        or not os.path.exists(os.path.join(REPO, path))):
      return value
    return os.path.join(REPO, path) + colon + variant

  out, i = [], 0
  while i < len(argv):
    arg = argv[i]
    name, eq, value = arg.partition('=')
    if name in ('--config', '-config') and eq:
      arg = f'{name}={resolve(value)}'
    elif arg in ('--config', '-config') and i + 1 < len(argv):
      out.append(arg)
      i += 1
      arg = resolve(argv[i])
    out.append(arg)
    i += 1
  return out


def cache_directory(workdir: str) -> str | None:
  """--compilation_cache with {workdir} filled in; None when it is empty (no cache)."""
  value = _COMPILATION_CACHE.value
  return value.replace('{workdir}', workdir) if value else None


def run(fn: Callable[[Any, str], Any],
        check_config: Callable[[Any], None] | None = None) -> None:
  """absl entry point: flags -> check_config(config) -> distributed init -> logging -> the
  workdir's lock and the compilation cache -> fn(config, workdir).

  `check_config` is the experiment module's: it reads only the config, so a bad value stops the
  run before a device, a file or a peer process is touched.
  """
  flags.mark_flags_as_required(['config', 'workdir'])

  def main(argv):
    if len(argv) > 1:
      raise absl_app.UsageError(f'Unexpected arguments: {argv[1:]}')
    quiet_library_logs()
    config = _CONFIG.value
    if check_config is not None:
      check_config(config)
    initialize_distributed()
    workdir = os.path.abspath(os.path.expanduser(_WORKDIR.value))
    log_environment(config)
    with compilation_cache(cache_directory(workdir)):
      run_recorded(fn, config, workdir, sys.argv)

  absl_app.run(main, argv=resolve_config_path(sys.argv))

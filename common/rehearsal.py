r"""Rehearsals of the accelerator variants: the real binary path, shrunk, on 8 fake CPU devices.

    python -m reproduce --rehearse [--only=classifier,memorisation]

A variant that runs on pods and GPU clusters declares a `rehearsal` section in its config:

    config.rehearsal = ml_collections.ConfigDict({
        'dataset': 'cifar10',          # its TFDS dataset (mocked if not prepared; None: none)
        'mock_examples': 64,           # examples per split under tfds.testing.mock_data
        # Only sizes shrink: the global batch, step counts, eval sizes, sweep lengths.
        'overrides': (('batch_size', 16), ('total_epochs', None), ('total_steps', 4), ...),
        # The first run stops early (these on top of `overrides`); the second resumes from its
        # checkpoint to the end. Empty: the second run resumes the finished run.
        'first_run': (('total_steps', 2),),
        # The train step at the REAL batch and mesh, compiled ahead of time (common.memory).
        'memory': {'step': 'classifier', 'loop': '', 'model': 'model',
                   'input_shape': (32, 32, 3), 'num_classes': 10},
    })

`apply(config)` is the one function that turns a variant into its rehearsal (no code path of an
experiment knows it is rehearsed). `rehearse_variant` runs `<module>.run(config, workdir)`
twice through common.app.run_recorded (the binaries' path: lock, config.json, run) under
`tfds.testing.mock_data` with the real dataset's names, splits, shapes and dtypes unless the
dataset is prepared, checks the summary, checks that a real run with no prepared data stops
before compute with the `tfds build` command, and compiles the real step for its memory. Each
variant runs in its own process (`python -m common.rehearsal`), so that its peak host memory is
its own and a crash is one failed row.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from typing import Any, Sequence

import ml_collections

from common import config_lib

# Config variants made for accelerators (a variant of these names must declare a rehearsal).
ACCELERATOR_VARIANTS = ('cifar10', 'cifar100', 'imagenet', 'c4', 'imagenet256', 'paper')
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _set(config: ml_collections.ConfigDict, dotted: str, value, where: str) -> None:
  target = config
  *path, last = dotted.split('.')
  try:
    for part in path:
      target = target[part]
    if last not in target:
      raise KeyError(last)
  except (KeyError, AttributeError, TypeError):
    raise config_lib.ConfigError(
        f'{where} names {dotted!r}, which is not a field of the config: rehearsal overrides set '
        'existing fields only.') from None
  with target.ignore_type():
    target[last] = value


def apply(config: ml_collections.ConfigDict, first_run: bool = False) -> ml_collections.ConfigDict:
  """A copy of `config` with its rehearsal section's overrides set (and, for first_run, the
  first run's on top). Raises ConfigError when the variant declares no rehearsal."""
  if 'rehearsal' not in config:
    raise config_lib.ConfigError(
        'This variant has no config.rehearsal section: declare the overrides that shrink it '
        '(see common/rehearsal.py).')
  out = config.copy_and_resolve_references()
  pairs = list(config.rehearsal.overrides)
  if first_run:
    pairs += list(config.rehearsal.get('first_run', ()) or ())
  for pair in pairs:
    if len(pair) != 2:
      raise config_lib.ConfigError(f'rehearsal.overrides entry {pair!r}: expected (name, value).')
    _set(out, pair[0], pair[1], 'rehearsal.overrides')
  return out


def dataset_prepared(name: str, data_dir: str | None) -> bool:
  from common.data import loader  # pylint: disable=g-import-not-at-top
  tfds = loader._import_tfds()  # pylint: disable=protected-access
  try:
    return tfds.builder(name, data_dir=data_dir).is_prepared()
  except Exception:  # pylint: disable=broad-except
    return False


@contextlib.contextmanager
def data_for(config: ml_collections.ConfigDict):
  """The real dataset when prepared; else tfds.testing.mock_data (names, splits, shapes and
  dtypes from the dataset's own metadata). Yields 'tfds' or 'mock'."""
  name = config.rehearsal.dataset
  if name is None:   # the variant reads no TFDS dataset (generated or local data)
    yield 'none'
    return
  if dataset_prepared(name, config.get('data_dir')):
    yield 'tfds'
    return
  from common.data import loader  # pylint: disable=g-import-not-at-top
  tfds = loader._import_tfds()  # pylint: disable=protected-access
  with tfds.testing.mock_data(num_examples=config.rehearsal.mock_examples):
    yield 'mock'


def metric_records(workdir: str) -> dict[str, list[dict[str, Any]]]:
  """{relative path of each metrics.jsonl under workdir: its records}."""
  from common import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
  out = {}
  for root, _, files in sorted(os.walk(workdir)):
    if 'metrics.jsonl' in files:
      out[os.path.relpath(root, workdir)] = metrics_lib.read_jsonl(
          os.path.join(root, 'metrics.jsonl'))
  return out


def losses(workdir: str) -> dict[str, list[float]]:
  """{run: the train loss of each record}: what the multi-process rehearsal compares."""
  return {k: [r['loss'] for r in recs if 'loss' in r] for k, recs in metric_records(workdir).items()}


def _unprepared_stops(module, config: ml_collections.ConfigDict) -> str:
  """A real run (no mock) with an empty data_dir must stop before compute naming `tfds build`."""
  from common.data import loader  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as empty:
    real = config.copy_and_resolve_references()
    with real.ignore_type():
      real.data_dir = empty
    start = time.time()
    try:
      module.run(real, os.path.join(empty, 'workdir'))
    except loader.DatasetError as e:
      if 'tfds build' not in str(e):
        return f'unprepared data stopped without the tfds build command: {e}'
      return ''
    return (f'a run with no prepared data in {empty} did not stop with the tfds build command '
            f'({time.time() - start:.0f} s)')


def rehearse_variant(name: str, module_name: str, config_module: str, variant: str,
                     workdir: str, memory: bool = True) -> dict[str, Any]:
  """One variant's rehearsal in this process: a row of the table (error '' when it passed)."""
  from common import app  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  row = {'variant': f'{name}:{variant}', 'steps': None, 'seconds': None, 'host_gib': None,
         'device_memory': None, 'fits': None, 'data': None, 'error': ''}
  start = time.time()
  try:
    module = importlib.import_module(module_name)
    config = importlib.import_module(config_module).get_config(variant)
    rehearsed = apply(config)
    module.check_config(config)
    module.check_config(rehearsed)
    argv = [f'--config={config_module}:{variant}', '--rehearse']
    with data_for(rehearsed) as data:
      row['data'] = {'tfds': 'tfds', 'none': 'generated (no TFDS dataset)'}.get(
          data, f'mock ({config.rehearsal.dataset} not prepared)')
      app.run_recorded(module.run, apply(config, first_run=True), workdir, argv)
      first = {k: len(v) for k, v in metric_records(workdir).items()}
      app.run_recorded(module.run, rehearsed, workdir, argv)
    with open(os.path.join(workdir, 'summary.json'), encoding='utf-8') as f:
      summary = json.load(f)
    if not summary.get('name'):
      raise RuntimeError(f'{workdir}/summary.json has no name')
    records = metric_records(workdir)
    row['steps'] = sum(max([r.get('step', 0) for r in recs] or [0]) for recs in records.values())
    if not records:
      raise RuntimeError(f'no metrics.jsonl under {workdir}: nothing trained')
    if first == {k: len(v) for k, v in records.items()} and config.rehearsal.get('first_run'):
      raise RuntimeError('the second run added no records: it did not resume and continue')
    row['seconds'] = round(time.time() - start, 1)
    row['host_gib'] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    if jax.process_index() == 0 and config.rehearsal.dataset is not None:
      row['error'] = _unprepared_stops(module, rehearsed)
    if memory and 'memory' in config.rehearsal and jax.process_index() == 0:
      from common import memory as memory_lib  # pylint: disable=g-import-not-at-top
      estimate = memory_lib.step_memory(config, config.rehearsal.memory)
      row['device_memory'] = round(estimate.total / memory_lib.GiB, 2)
      row['fits'] = estimate.fits()
      row['memory_note'] = estimate.describe()
      if not estimate.fits() and not row['error']:
        row['error'] = f'the real step does not fit: {estimate.describe()}'
  except Exception as e:  # pylint: disable=broad-except
    row['error'] = f'{type(e).__name__}: {e}'.strip()[:400]
    row['traceback'] = traceback.format_exc()
  if row['seconds'] is None:
    row['seconds'] = round(time.time() - start, 1)
  if row['host_gib'] is None:
    row['host_gib'] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
  return row


def variants_to_rehearse(experiments, only: Sequence[str] = ()) -> list[tuple[str, str, str, str]]:
  """(name, module, config module, variant) for every accelerator variant (a rehearsal section,
  or a name in ACCELERATOR_VARIANTS) of the chosen experiments."""
  out = []
  for name, module, config_module, _ in experiments:
    if only and name not in only:
      continue
    cm = importlib.import_module(config_module)
    for variant in getattr(cm, 'VARIANTS', ()):
      if variant in ACCELERATOR_VARIANTS or 'rehearsal' in cm.get_config(variant):
        out.append((name, module, config_module, variant))
  return out


def child_env(devices: int = 8, extra: dict[str, str] | None = None) -> dict[str, str]:
  env = dict(os.environ, JAX_NUM_CPU_DEVICES=str(devices), TF_CPP_MIN_LOG_LEVEL='2',
             PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
  env.update(extra or {})
  return env


def child_command(row, workdir: str, out: str, memory: bool = True,
                  extra: Sequence[str] = ()) -> list[str]:
  name, module, config_module, variant = row
  return [sys.executable, '-m', 'common.rehearsal', f'--name={name}', f'--module={module}',
          f'--config_module={config_module}', f'--variant={variant}', f'--workdir={workdir}',
          f'--out={out}', '--memory' if memory else '--no-memory', *extra]


@contextlib.contextmanager
def _terminate_raises():
  """SIGTERM (a scheduler's cancel, `kill`) raises SystemExit in the main thread while inside, so
  a running rehearsal process is killed on the way out (subprocess.run kills its child on any
  exception; rehearse_processes kills its own) instead of being left running, orphaned."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  previous = signal.signal(signal.SIGTERM, lambda signum, _: sys.exit(128 + signum))
  try:
    yield
  finally:
    signal.signal(signal.SIGTERM, previous)


def rehearse(rows, root: str, memory: bool = True, timeout: float = 1800) -> list[dict[str, Any]]:
  """Each row rehearsed in its own process on 8 fake CPU devices; the table's rows. A SIGTERM or
  Ctrl-C stops the running one too."""
  with _terminate_raises():
    return _rehearse_each(rows, root, memory, timeout)


def _rehearse_each(rows, root: str, memory: bool, timeout: float) -> list[dict[str, Any]]:
  results = []
  for row in rows:
    name, _, _, variant = row
    workdir = os.path.join(root, f'{name}-{variant}')
    out = os.path.join(root, f'{name}-{variant}.json')
    if os.path.exists(out):
      os.remove(out)
    start = time.time()
    try:
      proc = subprocess.run(child_command(row, workdir, out, memory), env=child_env(), cwd=REPO,
                            capture_output=True, text=True, timeout=timeout, check=False)
      tail = (proc.stdout + proc.stderr)[-3000:]
    except subprocess.TimeoutExpired:
      proc, tail = None, f'timed out after {timeout:.0f} s'
    if os.path.exists(out):
      with open(out, encoding='utf-8') as f:
        result = json.load(f)
    else:
      result = {'variant': f'{name}:{variant}', 'seconds': round(time.time() - start, 1),
                'error': f'the rehearsal process ended (rc {proc and proc.returncode}) without a '
                         f'result: {tail.strip().splitlines()[-1] if tail.strip() else ""}'}
    if result.get('error'):
      with open(os.path.join(root, f'{name}-{variant}.log'), 'w', encoding='utf-8') as f:
        f.write(result.get('traceback', '') + '\n' + tail)
    results.append(result)
  return results


def _free_port() -> int:
  import socket  # pylint: disable=g-import-not-at-top
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def rehearse_processes(row, workdir: str, processes: int = 2, devices: int = 4,
                       timeout: float = 1800) -> list[dict[str, Any]]:
  """One variant rehearsed by `processes` processes of `devices` fake CPU devices each, joined
  over localhost (gloo collectives, as the README's multi-process example); each process's row.
  The workdir is shared, as on a cluster's file system."""
  port = _free_port()
  out = workdir + '.json'
  env = child_env(devices, {'JAX_CPU_COLLECTIVES_IMPLEMENTATION': 'gloo'})
  procs = [subprocess.Popen(
      child_command(row, workdir, out, memory=False,
                    extra=(f'--coordinator_address=127.0.0.1:{port}',
                           f'--num_processes={processes}', f'--process_id={i}')),
      env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(processes)]
  try:
    with _terminate_raises():
      logs = [p.communicate(timeout=timeout)[0] for p in procs]
  finally:  # a timeout, SIGTERM or Ctrl-C: none of the processes is left running
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  results = []
  for i, (p, log) in enumerate(zip(procs, logs)):
    path = f'{out}.{i}'
    if os.path.exists(path):
      with open(path, encoding='utf-8') as f:
        results.append(json.load(f))
    else:
      results.append({'variant': f'{row[0]}:{row[3]}', 'error': f'process {i} ended (rc '
                      f'{p.returncode}) without a result: {log[-2000:]}'})
  return results


def table(results: list[dict[str, Any]]) -> str:
  fmt = lambda v, f='{}': '-' if v is None else f.format(v)
  lines = ['| variant | steps | seconds | peak host GiB | per-device GiB (fits) | data | result |',
           '|---|---|---|---|---|---|---|']
  for r in results:
    fits = r.get('fits')
    device = ('-' if r.get('device_memory') is None else
              f'{r["device_memory"]:.2f} ({", ".join(fits) if fits else "fits none"})')
    status = 'pass' if not r.get('error') else 'FAIL: ' + r['error'].replace('|', '/')
    lines.append(f'| {r["variant"]} | {fmt(r.get("steps"))} | {fmt(r.get("seconds"))} | '
                 f'{fmt(r.get("host_gib"))} | {device} | {r.get("data") or "-"} | {status} |')
  return '\n'.join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description='One variant rehearsed (run by reproduce).')
  for flag in ('name', 'module', 'config_module', 'variant', 'workdir', 'out'):
    parser.add_argument(f'--{flag}', required=True)
  parser.add_argument('--memory', action=argparse.BooleanOptionalAction, default=True)
  parser.add_argument('--coordinator_address', default='')
  parser.add_argument('--num_processes', type=int, default=1)
  parser.add_argument('--process_id', type=int, default=0)
  args = parser.parse_args(argv)
  import jax  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top
  flags.FLAGS.mark_as_parsed()
  logging.set_verbosity(logging.WARNING)
  if 'JAX_NUM_CPU_DEVICES' in os.environ:
    jax.config.update('jax_num_cpu_devices', int(os.environ['JAX_NUM_CPU_DEVICES']))
  if args.coordinator_address:
    jax.distributed.initialize(args.coordinator_address, num_processes=args.num_processes,
                               process_id=args.process_id)
  from common import app  # pylint: disable=g-import-not-at-top
  app.quiet_library_logs()
  with app.compilation_cache(os.path.join(os.path.dirname(args.workdir), 'jax_cache')):
    row = rehearse_variant(args.name, args.module, args.config_module, args.variant,
                           args.workdir, memory=args.memory)
  row['processes'] = jax.process_count()
  if jax.process_index() == 0 or args.num_processes > 1:
    out = args.out if args.num_processes == 1 else f'{args.out}.{args.process_id}'
    with open(out + '.tmp', 'w', encoding='utf-8') as f:
      json.dump(row, f, indent=2)
    os.replace(out + '.tmp', out)
  return 0 if not row['error'] else 1


if __name__ == '__main__':
  sys.exit(main())

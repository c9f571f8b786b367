r"""The main job: every paper's CPU reproduction, then one report.

    python -m reproduce --workdir=runs/cpu             # all experiments
    python -m reproduce --workdir=runs/cpu --only=classifier
    python -m reproduce --workdir=runs/study --variant=study   # the longer studies (hours)
    python -m reproduce --rehearse [--only=classifier,...]     # accelerator variants, shrunk

--rehearse runs every accelerator variant (cifar10, cifar100, imagenet, c4, ...) of the chosen
experiments on 8 fake CPU devices through its binary's path, shrunk by its config's `rehearsal`
section (common.rehearsal), each in its own process, and prints one table (steps, seconds, peak
host memory, the real step's per-device memory from an ahead-of-time compile, pass/fail); the
exit status is 1 when any fails.

Each experiment runs in this process with its config's `cpu` variant (or --variant where its
config offers it; a variant no chosen experiment offers is refused with the list of each one's)
and writes <workdir>/<name>/summary.json; the report is <workdir>/report.md (+ summary.json of
them all). Every chosen experiment's config is checked (its module's `check_config`) before the
first one starts. A failing experiment is reported as failed and the others still run.
Re-running resumes each experiment from its checkpoints; the report keeps each experiment's
first full run's wall time and shows a rerun's beside it (<workdir>/timings.json). The job's
workdir and each experiment's are locked while it runs. A cpu job's report compares every check
with the recorded results (results/cpu/<name>.json): the recorded value and state, the new ones,
and whether the state moved.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import traceback
from typing import Any

from absl import logging

# (name, module with run(config, workdir) and check_config(config), config module, variant).
# Each paper adds its line.
EXPERIMENTS = (
    ('classifier', 'common.classifier', 'configs.common.classifier', 'cpu'),
    ('mup_depth', 'mup_depth.experiment', 'configs.mup_depth.sweep', 'cpu'),
    ('cascades', 'cascades.experiment', 'configs.cascades.mnist1d', 'cpu'),
    ('resmem', 'resmem.experiment', 'configs.resmem.mnist1d', 'cpu'),
    ('abstain', 'abstain.experiment', 'configs.abstain.mnist1d', 'cpu'),
    ('fire_pe', 'fire_pe.experiment', 'configs.fire_pe.lm', 'cpu'),
    ('iwes', 'iwes.experiment', 'configs.iwes.mnist1d', 'cpu'),
    ('distill', 'distill.experiment', 'configs.distill.mnist1d', 'cpu'),
    ('memorisation', 'memorisation.experiment', 'configs.memorisation.sweep', 'cpu'),
    ('pause', 'pause.experiment', 'configs.pause.lm', 'cpu'),
    ('muse_mrf', 'muse_mrf.experiment', 'configs.muse_mrf.digits', 'cpu'),
    ('resmem_lm', 'resmem.lm_experiment', 'configs.resmem.lm', 'cpu'),
)
TIMINGS = 'timings.json'


class VariantError(ValueError):
  """--variant names a variant that none of the chosen experiments offers."""


def choose_variants(variant: str, chosen) -> tuple[dict[str, str], list[str]]:
  """({name: the variant it runs}, [names that fall back to their listed variant]).

  `chosen` holds EXPERIMENTS rows. With no `variant` every experiment runs its listed one.
  """
  offered = {name: tuple(getattr(importlib.import_module(config_module), 'VARIANTS', ()))
             for name, _, config_module, _ in chosen}
  if not variant:
    return {name: listed for name, _, _, listed in chosen}, []
  if not any(variant in v for v in offered.values()):
    lines = '\n'.join(f'  {name}: {", ".join(v)}' for name, v in offered.items())
    raise VariantError(f'Unknown variant {variant!r}: no chosen experiment offers it. The '
                       f'variants each offers:\n{lines}')
  fallback = [name for name, v in offered.items() if variant not in v]
  return ({name: variant if name not in fallback else listed
           for name, _, _, listed in chosen}, fallback)


def check_configs(chosen, variants: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
  """({name: config}, {name: error}): every chosen experiment's config built and checked by its
  module's check_config (which reads only the config) before any of them runs."""
  from common import config_lib  # pylint: disable=g-import-not-at-top
  configs, errors = {}, {}
  for name, module, config_module, _ in chosen:
    try:
      config = importlib.import_module(config_module).get_config(variants[name])
      check = getattr(importlib.import_module(module), 'check_config', None)
      if check is None:
        raise config_lib.ConfigError(f'{module} has no check_config(config): every experiment '
                                     'module defines one.')
      check(config)
      configs[name] = config
    except Exception as e:  # pylint: disable=broad-except
      errors[name] = f'{config_module}:{variants[name]}: {type(e).__name__}: {e}'
  return configs, errors


def _load_timings(root: str) -> dict[str, Any]:
  """{name: {'variant', 'seconds' (the first full run's), 'reruns': [seconds, ...]}}; a workdir
  from before timings.json gives its report's recorded times as first runs."""
  path = os.path.join(root, TIMINGS)
  if os.path.exists(path):
    with open(path, encoding='utf-8') as f:
      return json.load(f)
  try:
    with open(os.path.join(root, 'summary.json'), encoding='utf-8') as f:
      old = json.load(f).get('timings') or {}
  except (OSError, ValueError):
    old = {}
  return {name: {'variant': None, 'seconds': s, 'reruns': []} for name, s in old.items()}


def record_timing(timings: dict[str, Any], name: str, variant: str, seconds: float,
                  finished_before: bool) -> None:
  """A run of an experiment whose summary existed before (under the same variant) is a rerun:
  the first full run's time stays and this one joins the reruns."""
  kept = timings.get(name)
  if finished_before and kept and kept.get('variant') in (None, variant):
    kept['variant'] = variant
    kept['reruns'].append(round(seconds, 1))
  else:
    timings[name] = {'variant': variant, 'seconds': round(seconds, 1), 'reruns': []}


def _save_timings(root: str, timings: dict[str, Any]) -> None:
  path = os.path.join(root, TIMINGS)
  with open(path + '.tmp', 'w', encoding='utf-8') as f:
    json.dump(timings, f, indent=2)
  os.replace(path + '.tmp', path)


def _add_reruns_to_report(path: str, timings: dict[str, Any]) -> None:
  reruns = {n: t for n, t in timings.items() if t['reruns']}
  if not reruns:
    return
  lines = ['', '## Reruns', '',
           'The wall times above are each experiment\'s first full run; reruns in this workdir '
           '(resumed from its checkpoints) took:', '',
           '| experiment | first run | reruns |', '|---|---|---|']
  lines += [f'| {n} | {t["seconds"]:.1f} s | {", ".join(f"{s:.1f} s" for s in t["reruns"])} |'
            for n, t in reruns.items()]
  with open(path, 'a', encoding='utf-8') as f:
    f.write('\n'.join(lines) + '\n')


def run_experiments(root: str, chosen, variants, configs, timings):
  """Runs each chosen experiment in turn; ({name: traceback} of failures, {name: seconds of
  this run})."""
  from common import app  # pylint: disable=g-import-not-at-top
  failures, elapsed = {}, {}
  for name, module, config_module, _ in chosen:
    workdir = os.path.join(root, name)
    finished_before = os.path.exists(os.path.join(workdir, 'summary.json'))
    logging.info('=== %s: %s with %s:%s -> %s', name, module, config_module, variants[name],
                 workdir)
    start = time.time()
    try:
      app.run_recorded(importlib.import_module(module).run, configs[name], workdir,
                       [f'--config={config_module}:{variants[name]}'])
    except Exception:  # pylint: disable=broad-except
      failures[name] = traceback.format_exc()
      logging.error('%s failed:\n%s', name, failures[name])
    elapsed[name] = time.time() - start
    if name not in failures:
      record_timing(timings, name, variants[name], elapsed[name], finished_before)
      _save_timings(root, timings)
  return failures, elapsed


def run_job(root: str, chosen, variants, configs) -> tuple[str, dict[str, str]]:
  """Runs the experiments under one compilation cache and writes the report; (its path,
  failures)."""
  from common import app  # pylint: disable=g-import-not-at-top
  from common import report  # pylint: disable=g-import-not-at-top
  timings = _load_timings(root)
  # One XLA compilation cache for the whole job: papers compile many of the same small programs,
  # and a rerun compiles nothing it compiled before.
  with app.compilation_cache(os.path.join(root, 'jax_cache')):
    failures, elapsed = run_experiments(root, chosen, variants, configs, timings)
  shown = {n: t['seconds'] for n, t in timings.items()}
  shown.update({n: s for n, s in elapsed.items() if n in failures and n not in shown})
  # The cpu runs are compared check by check with the recorded ones (results/cpu, common.results).
  recorded = (os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results', 'cpu')
              if set(variants.values()) == {'cpu'} else None)
  path = report.build_report(root, failures=failures, timings=shown, recorded=recorded)
  _add_reruns_to_report(path, timings)
  return path, failures


def rehearse(chosen, root: str, memory: bool = True) -> int:
  """--rehearse: every accelerator variant of the chosen experiments; prints the table."""
  from common import rehearsal  # pylint: disable=g-import-not-at-top
  rows = rehearsal.variants_to_rehearse(chosen)
  if not rows:
    print('No accelerator variant among the chosen experiments.')
    return 0
  os.makedirs(root, exist_ok=True)
  print(f'Rehearsing {len(rows)} variants on 8 fake CPU devices in {root} ...', flush=True)
  results = rehearsal.rehearse(rows, root, memory=memory)
  text = rehearsal.table(results)
  with open(os.path.join(root, 'rehearsal.md'), 'w', encoding='utf-8') as f:
    f.write(text + '\n')
  with open(os.path.join(root, 'rehearsal.json'), 'w', encoding='utf-8') as f:
    json.dump(results, f, indent=2)
  print(text)
  failed = [r['variant'] for r in results if r.get('error')]
  if failed:
    print(f'{len(failed)} of {len(results)} failed: {", ".join(failed)} (logs: {root}/*.log)')
  return 1 if failed else 0


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', default=None,
                      help='default: runs/cpu (runs/rehearsal with --rehearse)')
  parser.add_argument('--only', default='', help='comma-separated experiment names')
  parser.add_argument('--variant', default='',
                      help="run this config variant where a paper offers it (e.g. 'study': more "
                           'seeds, sizes, encodings), the listed one elsewhere')
  parser.add_argument('--rehearse', action='store_true',
                      help='rehearse the accelerator variants instead (common.rehearsal)')
  parser.add_argument('--memory', action=argparse.BooleanOptionalAction, default=True,
                      help='with --rehearse: compile the real step for its per-device memory')
  args = parser.parse_args(argv)
  names = [n for n, *_ in EXPERIMENTS]
  only = [n for n in args.only.split(',') if n]
  unknown = sorted(set(only) - set(names))
  if unknown:
    parser.error(f'unknown experiments {unknown}; available: {names}')
  chosen = [row for row in EXPERIMENTS if not only or row[0] in only]
  if args.rehearse:
    return rehearse(chosen, os.path.abspath(args.workdir or 'runs/rehearsal'), args.memory)
  args.workdir = args.workdir or 'runs/cpu'
  try:
    variants, fallback = choose_variants(args.variant, chosen)
  except VariantError as e:
    parser.error(str(e))
  if fallback:
    listed = ', '.join(sorted({repr(variants[n]) for n in fallback}))
    line = (f'Variant {args.variant!r} is not offered by {", ".join(fallback)}: they fall back '
            f'to {listed}.')
    print(line)
    logging.warning(line)

  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.FLAGS.mark_as_parsed()
  logging.set_verbosity(logging.INFO)
  from common import app  # pylint: disable=g-import-not-at-top
  app.quiet_library_logs()

  configs, errors = check_configs(chosen, variants)
  if errors:
    print('Config check failed; nothing was run:\n' +
          '\n'.join(f'  {name}: {error}' for name, error in errors.items()), file=sys.stderr)
    return 2
  try:
    with app.workdir_lock(os.path.abspath(args.workdir)):
      path, failures = run_job(os.path.abspath(args.workdir), chosen, variants, configs)
  except app.WorkdirInUseError as e:  # the job's workdir (each experiment's failure is caught)
    print(e, file=sys.stderr)
    return 1
  print(f'Report: {path}')
  return 1 if failures else 0


if __name__ == '__main__':
  sys.exit(main())

r"""The main job: every paper's CPU reproduction, then one report.

    python -m reproduce --workdir=runs/cpu             # all experiments
    python -m reproduce --workdir=runs/cpu --only=classifier
    python -m reproduce --workdir=runs/study --variant=study   # the longer studies (hours)

Each experiment runs in this process with its config's `cpu` variant and writes
<workdir>/<name>/summary.json; the report is <workdir>/report.md (+ summary.json of them all).
A failing experiment is reported as failed and the others still run. Re-running resumes each
experiment from its checkpoints.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback

from absl import logging

# (name, module with run(config, workdir), config module, variant). Each paper adds its line.
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


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', default='runs/cpu')
  parser.add_argument('--only', default='', help='comma-separated experiment names')
  parser.add_argument('--variant', default='',
                      help="run this config variant where a paper offers it (e.g. 'study': more "
                           'seeds, sizes, encodings), the listed one elsewhere')
  args = parser.parse_args(argv)
  names = [n for n, *_ in EXPERIMENTS]
  only = [n for n in args.only.split(',') if n]
  unknown = sorted(set(only) - set(names))
  if unknown:
    parser.error(f'unknown experiments {unknown}; available: {names}')

  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.FLAGS.mark_as_parsed()
  logging.set_verbosity(logging.INFO)
  from common import app  # pylint: disable=g-import-not-at-top
  from common import report  # pylint: disable=g-import-not-at-top
  app.quiet_library_logs()

  failures, timings = {}, {}
  # One XLA compilation cache for the whole job: papers compile many of the same small programs,
  # and a rerun compiles nothing it compiled before.
  with app.compilation_cache(os.path.join(os.path.abspath(args.workdir), 'jax_cache')):
    for name, module, config_module, variant in EXPERIMENTS:
      if only and name not in only:
        continue
      workdir = os.path.abspath(os.path.join(args.workdir, name))
      start = time.time()
      try:
        offered = getattr(importlib.import_module(config_module), 'VARIANTS', ())
        if args.variant and args.variant in offered:
          variant = args.variant
        logging.info('=== %s: %s with %s:%s -> %s', name, module, config_module, variant,
                     workdir)
        config = importlib.import_module(config_module).get_config(variant)
        app.run_recorded(importlib.import_module(module).run, config, workdir,
                         [f'--config={config_module}:{variant}'])
      except Exception:  # pylint: disable=broad-except
        failures[name] = traceback.format_exc()
        logging.error('%s failed:\n%s', name, failures[name])
      timings[name] = time.time() - start
  path = report.build_report(args.workdir, failures=failures, timings=timings)
  print(f'Report: {path}')
  return 1 if failures else 0


if __name__ == '__main__':
  sys.exit(main())

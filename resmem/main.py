"""python -m resmem.main --config=configs/resmem/mnist1d.py:cpu --workdir=/tmp/resmem
python -m resmem.main --config=configs/resmem/lm.py:cpu --workdir=/tmp/resmem_lm

A config with `experiment = 'lm'` runs the language-model study (resmem.lm_experiment); the
others the classification and regression study (resmem.experiment).
"""

from common import app
from resmem import experiment
from resmem import lm_experiment


def _module(config):
  return lm_experiment if config.get('experiment', 'classification') == 'lm' else experiment


def run(config, workdir):
  return _module(config).run(config, workdir)


def check_config(config) -> None:
  _module(config).check_config(config)


if __name__ == '__main__':
  app.run(run, check_config)

"""python -m resmem.main --config=configs/resmem/mnist1d.py:cpu --workdir=/tmp/resmem
python -m resmem.main --config=configs/resmem/lm.py:cpu --workdir=/tmp/resmem_lm

A config with `experiment = 'lm'` runs the language-model study (resmem.lm_experiment); the
others the classification and regression study (resmem.experiment).
"""

from common import app
from resmem import experiment
from resmem import lm_experiment


def run(config, workdir):
  if config.get('experiment', 'classification') == 'lm':
    return lm_experiment.run(config, workdir)
  return experiment.run(config, workdir)


if __name__ == '__main__':
  app.run(run)

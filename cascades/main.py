"""python -m cascades.main --config=configs/cascades/mnist1d.py:cpu --workdir=/tmp/cascades"""

from common import app
from cascades import experiment

if __name__ == '__main__':
  app.run(experiment.run, experiment.check_config)

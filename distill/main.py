"""python -m distill.main --config=configs/distill/mnist1d.py:cpu --workdir=/tmp/distill"""

from common import app
from distill import experiment

if __name__ == '__main__':
  app.run(experiment.run, experiment.check_config)

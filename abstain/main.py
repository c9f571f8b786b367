"""python -m abstain.main --config=configs/abstain/mnist1d.py:cpu --workdir=/tmp/abstain"""

from common import app
from abstain import experiment

if __name__ == '__main__':
  app.run(experiment.run, experiment.check_config)

"""python -m iwes.main --config=configs/iwes/mnist1d.py:cpu --workdir=/tmp/iwes"""

from common import app
from iwes import experiment

if __name__ == '__main__':
  app.run(experiment.run, experiment.check_config)

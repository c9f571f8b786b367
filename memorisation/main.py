"""python -m memorisation.main --config=configs/memorisation/sweep.py:cpu --workdir=/tmp/mem"""

from common import app
from memorisation import experiment

if __name__ == '__main__':
  app.run(experiment.run, experiment.check_config)

"""python -m pause.main --config=configs/pause/lm.py:cpu --workdir=/tmp/pause"""

from common import app
from pause import experiment

if __name__ == '__main__':
  app.run(experiment.run, experiment.check_config)

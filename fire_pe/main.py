"""python -m fire_pe.main --config=configs/fire_pe/lm.py:cpu --workdir=/tmp/fire_pe"""

from common import app
from fire_pe import experiment

if __name__ == '__main__':
  app.run(experiment.run, experiment.check_config)

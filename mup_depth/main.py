"""python -m mup_depth.main --config=configs/mup_depth/sweep.py:cpu --workdir=/tmp/mup_depth"""

from common import app
from mup_depth import experiment

if __name__ == '__main__':
  app.run(experiment.run, experiment.check_config)

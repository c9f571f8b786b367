"""python -m muse_mrf.main --config=configs/muse_mrf/digits.py:cpu --workdir=/tmp/muse_mrf"""

from common import app
from muse_mrf import experiment

if __name__ == '__main__':
  app.run(experiment.run, experiment.check_config)

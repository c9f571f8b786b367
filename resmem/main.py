"""python -m resmem.main --config=configs/resmem/mnist1d.py:cpu --workdir=/tmp/resmem"""

from common import app
from resmem import experiment

if __name__ == '__main__':
  app.run(experiment.run)

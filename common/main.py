"""Trains the reference classifier: python -m common.main --config=configs/common/classifier.py:cpu --workdir=/tmp/x"""

from common import app
from common import classifier

if __name__ == '__main__':
  app.run(classifier.run, classifier.check_config)

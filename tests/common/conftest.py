"""Fixtures for the platform tests: the reference config shrunk, and a CLI runner."""

import os
import subprocess
import sys

import pytest

from common import config_lib
from configs.common import classifier as classifier_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ONE_THREAD = {
    'XLA_FLAGS': '--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1',
    'OMP_NUM_THREADS': '1', 'OPENBLAS_NUM_THREADS': '1', 'TF_CPP_MIN_LOG_LEVEL': '2',
}


def tiny_config(**overrides):
  """The reference cpu config, shrunk: a small MLP on digits, 60 steps."""
  config = classifier_config.get_config('cpu')
  config.model.widths = (32,)
  config.batch_size = 64
  config.total_steps = 60
  config.log_every_steps = 10
  config.eval_every_steps = 30
  config.checkpoint_every_steps = 30
  config.optimizer.learning_rate = 5e-3
  return config_lib.set_fields(config, **overrides)


@pytest.fixture
def config():
  return tiny_config()


def run_cli(workdir, *flags, devices=1, env=None, module='common.main',
            config='configs/common/classifier.py:cpu', timeout=300, **popen):
  """Runs an absl binary in a fresh process (one XLA thread); returns the Popen if popen, else
  the CompletedProcess."""
  full_env = dict(os.environ, JAX_NUM_CPU_DEVICES=str(devices), **ONE_THREAD, **(env or {}))
  cmd = [sys.executable, '-m', module, f'--config={config}', f'--workdir={workdir}', *flags]
  if popen.pop('background', False):
    return subprocess.Popen(cmd, cwd=REPO, env=full_env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
  return subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True,
                        timeout=timeout)

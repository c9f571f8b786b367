"""Root conftest: 8 fake CPU devices for the whole session, absl flags parsed, the slow marker."""

import os

# Before jax starts its backend: multi-device code is tested on 8 fake CPU devices.
os.environ.setdefault('JAX_NUM_CPU_DEVICES', '8')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import jax  # pylint: disable=g-import-not-at-top
from absl import flags  # pylint: disable=g-import-not-at-top

jax.config.update('jax_num_cpu_devices', int(os.environ['JAX_NUM_CPU_DEVICES']))
# Silent broadcasting (a (N,) array meeting an (N, 1) one) is an error in every test.
jax.config.update('jax_numpy_rank_promotion', 'raise')
flags.FLAGS.mark_as_parsed()


def pytest_configure(config):
  config.addinivalue_line('markers', 'slow: long tests kept out of the default run')

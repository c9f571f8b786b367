"""Root conftest: 8 fake CPU devices for the whole session, one XLA compilation cache for the whole
test run, absl flags parsed, the slow marker."""

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

# One persistent XLA compilation cache for every test process (both xdist workers, and the
# subprocesses the end-to-end tests start, through the environment): the tiny end-to-end runs
# compile the same small programs again and again, and most of the suite's time is compiling.
# Keyed by program, options and jax/XLA versions, so a stale entry is never used; kept between
# runs (GRP_TEST_JAX_CACHE='' turns it off).
_CACHE = os.environ.setdefault(
    'GRP_TEST_JAX_CACHE', os.path.join(os.path.expanduser('~'), '.cache', 'grp_test_jax_cache'))
if _CACHE:
  os.makedirs(_CACHE, exist_ok=True)
  os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', _CACHE)
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.1')
  jax.config.update('jax_compilation_cache_dir', _CACHE)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.1)


def pytest_configure(config):
  config.addinivalue_line('markers', 'slow: long tests kept out of the default run')

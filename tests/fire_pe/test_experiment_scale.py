"""fire_pe on a sharded mesh and on streamed TFDS text (the training runs are slow tests)."""

import pytest

from common.data import loader
from configs.fire_pe import lm as lm_config
from fire_pe import lm


@pytest.mark.slow
def test_lm_with_fire_trains_the_same_on_a_sharded_mesh(tmp_path):
  """The FIRE LM under FSDP x tensor parallelism (2 x 4 fake devices) follows the 1-device run."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  ids = loader.load_text('stdlib_text', 'train', max_bytes=50_000)
  losses = {}
  for name, mesh, sharding, devices in (('one', (('data', 1), ('model', 1)), 'data', 1),
                                        ('tp', (('data', 2), ('model', 4)), 'fsdp_tensor', -1)):
    config = lm_config.get_config('tiny')
    config.loop.total_steps = 20
    config.loop.log_every_steps = 5
    config.loop.mesh = mesh
    config.loop.sharding = sharding
    config.loop.num_devices = devices
    result = lm.train_encoding(config, 'fire', 0, ids, str(tmp_path / name))
    losses[name] = np.array([r['loss'] for r in result.history if 'loss' in r])
    if name == 'tp':
      query = result.state.params['layer_0']['attention']['query']['kernel']
      assert tuple(query.sharding.spec) == ('data', 'model')   # (embed, heads, kv)
  np.testing.assert_allclose(losses['tp'], losses['one'], rtol=2e-4)


def test_tfds_text_corpus_through_mock_data():
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  with tfds.testing.mock_data(num_examples=4):
    ids = loader.load_text('c4/en', 'train', max_bytes=300)
  assert 0 < len(ids) <= 300 and ids.min() >= 1 and ids.max() < loader.BYTE_VOCAB_SIZE


def _c4_config():
  config = lm_config.get_config('tiny')
  config.dataset, config.train_input, config.docs_per_row = 'c4/en', 'stream', 2
  config.loop.total_steps = 3
  config.loop.batch_size = 8
  return config


def test_c4_rows_stream_from_a_tfds_text_dataset():
  """The c4 variant's input path on mock c4: rows packed on demand, a padded target unweighted."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  config = _c4_config()
  with tfds.testing.mock_data(num_examples=32):
    train_iter = lm.train_iterator(config, 0, None)
    batch = train_iter.batch(0)
  assert batch['tokens'].shape == (8, config.train_length + 1)
  assert batch['weights'].shape == (8, config.train_length)


@pytest.mark.slow
def test_c4_rows_train_the_lm(tmp_path):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  with tfds.testing.mock_data(num_examples=32):
    result = lm.train_encoding(_c4_config(), 'fire', 0, None, str(tmp_path))
  assert int(result.state.step) == 3


def test_an_evaluation_text_shorter_than_the_longest_window_stops_before_training(tmp_path):
  """Mock c4's validation text (documents of 10-20 bytes) held no 2,049-token window: the run
  trained every encoding, then failed in evaluation. Now it stops before training, naming the
  lengths and the fields that set them."""
  from fire_pe import experiment  # pylint: disable=g-import-not-at-top
  config = lm_config.get_config('tiny')   # evaluated to 8 x 16 = 128 tokens
  config.max_eval_bytes = 100
  with pytest.raises(loader.DatasetError, match=r'has 100 tokens: not one window of the longest '
                     r'evaluation length 128 \(8x config.train_length=16\).*config.eval_factors'):
    experiment.run(config, str(tmp_path))
  assert not (tmp_path / 'models').exists()


def test_a_streamed_corpus_not_prepared_stops_with_the_array_record_build_command(tmp_path):
  """Streamed training needs array_record files: a run on an unprepared c4 names that command
  (not the plain `tfds build`, whose tfrecord files cannot be streamed) before anything runs."""
  from fire_pe import experiment  # pylint: disable=g-import-not-at-top
  config = _c4_config()
  config.data_dir = str(tmp_path / 'empty')
  with pytest.raises(loader.DatasetError, match='tfds build c4/en --file_format=array_record'):
    experiment.run(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run' / 'models').exists()


def test_the_memory_estimate_compiles_the_step_the_study_trains():
  """fire_pe.memory.train_step: FIRE's model and loss from lm.train_functions (what
  train_encoding hands the loop), at the loop's batch of train_length + 1 tokens (and the
  streamed rows' weights); the parameters counted from their shapes."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from fire_pe import memory  # pylint: disable=g-import-not-at-top
  config = _c4_config()
  config.loop.mesh = (('data', 1),)
  config.loop.num_devices = 1
  estimate = memory.train_step(config, ml_collections.ConfigDict({'encoding': 'fire'}),
                               jax.devices()[:1])
  model, _, _ = lm.train_functions(config, 'fire')
  params = jax.eval_shape(model.init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1, 16), jnp.int32))['params']
  assert 'position' in params['layer_0']   # FIRE's MLP in every layer
  assert estimate.params == sum(np.prod(p.shape) * 4 for p in jax.tree.leaves(params))
  assert 'fire_pe fire LM' in estimate.note and 'tokens (8, 17), weights (8, 16)' in estimate.note
  assert estimate.temporaries > 0 and estimate.fits()

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

"""Embedded datasets, the loader (embedded and TFDS through mock_data), the input pipeline."""

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from common import classifier
from common import mesh as mesh_lib
from common.data import embedded
from common.data import loader
from common.data import pipeline
from tests.common.conftest import tiny_config


def test_digits_split_is_fixed_and_disjoint():
  train, test = loader.load('digits', 'train'), loader.load('digits', 'test')
  assert train['inputs'].shape == (1497, 8, 8, 1) and test['inputs'].shape == (300, 8, 8, 1)
  assert train['inputs'].dtype == np.float32 and 0 <= train['inputs'].min() <= 1
  flat = lambda a: {x.tobytes() for x in a['inputs']}
  assert len(flat(train) & flat(test)) < 5  # digits has a few duplicate images, no shared rows
  np.testing.assert_array_equal(loader.load('digits', 'train')['label'], train['label'])


def test_split_slicing():
  full = loader.load('digits', 'train')
  head, tail = loader.load('digits', 'train[:90%]'), loader.load('digits', 'train[90%:]')
  assert len(head['label']) + len(tail['label']) == len(full['label'])
  np.testing.assert_array_equal(loader.load('digits', 'train[100:110]')['label'],
                                full['label'][100:110])


def test_mnist1d_is_generated_offline_and_cached(tmp_path, monkeypatch):
  from mnist1d import data as m1d  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(m1d, 'get_dataset', lambda *a, **k: pytest.fail('must not download'))
  state = np.random.get_state()[1].copy()
  train = embedded.mnist1d('train', num_samples=600, data_dir=str(tmp_path))
  test = embedded.mnist1d('test', num_samples=600, data_dir=str(tmp_path))
  assert train['inputs'].shape == (480, 40, 1) and test['inputs'].shape == (120, 40, 1)
  assert set(np.unique(train['label'])) == set(range(10))
  np.testing.assert_array_equal(np.random.get_state()[1], state)  # global RNG untouched
  assert len(list(tmp_path.iterdir())) == 1
  again = embedded.mnist1d('train', num_samples=600, data_dir=str(tmp_path))
  np.testing.assert_array_equal(again['inputs'], train['inputs'])


def test_stdlib_text_corpus_is_deterministic_english():
  train = loader.load_text('stdlib_text', 'train')
  test = loader.load_text('stdlib_text', 'test')
  assert len(train) > 1_500_000 and len(test) > 50_000
  assert train.min() >= loader.BYTE_OFFSET and train.max() < loader.BYTE_VOCAB_SIZE
  text = loader.decode_bytes(train[:20000])
  assert text.count(' the ') > 100
  corpus = embedded.build_stdlib_corpus().encode()
  assert bytes((np.concatenate([train, test]) - loader.BYTE_OFFSET).astype(np.uint8)) == corpus


def test_tfds_names_take_the_same_path_under_mock_data(tmp_path):
  with tfds.testing.mock_data(num_examples=64):
    arrays = loader.load('cifar10', 'train')
    assert arrays['inputs'].shape == (64, 32, 32, 3) and arrays['inputs'].dtype == np.float32
    assert arrays['inputs'].max() <= 1.0
    config = tiny_config(dataset='cifar10', batch_size=16, total_steps=4, log_every_steps=2,
                         eval_every_steps=0, eval_splits=(('test', 'test[:32]'),))
    with config.unlocked():
      config.model = {'name': 'resnet', 'width': 8, 'stage_sizes': (1, 1), 'ndim': 2}
    result = classifier.train_classifier(config, str(tmp_path)).result
  assert int(result.state.step) == 4
  assert 'test/accuracy' in result.history[-1]


def test_processes_split_every_global_batch_exactly():
  arrays = {'x': np.arange(1000), 'y': np.arange(1000) * 2}
  whole = pipeline.BatchIterator(arrays, 64, seed=3, process_index=0, process_count=1)
  parts = [pipeline.BatchIterator(arrays, 64, seed=3, process_index=i, process_count=4)
           for i in range(4)]
  for k in (0, 1, 15, 16, 40):  # 15 batches per epoch: crosses epochs
    np.testing.assert_array_equal(np.concatenate([p.batch(k)['x'] for p in parts]),
                                  whole.batch(k)['x'])
  epoch = np.concatenate([whole.batch(k)['x'] for k in range(15)])
  assert len(set(epoch)) == 15 * 64  # no repeats within an epoch
  assert not np.array_equal(whole.batch(0)['x'], whole.batch(15)['x'])  # reshuffled


def test_iterator_state_restores_the_batch_sequence():
  arrays = {'x': np.arange(500)}
  a = pipeline.BatchIterator(arrays, 32, seed=1)
  seq = [next(a)['x'] for _ in range(20)]
  b = pipeline.BatchIterator(arrays, 32, seed=1)
  b.set_state({'position': 12, 'global_batch_size': 32})
  np.testing.assert_array_equal(next(b)['x'], seq[12])


def test_prefetcher_counts_consumed_batches_only():
  arrays = {'x': np.arange(500, dtype=np.float32)}
  it = pipeline.BatchIterator(arrays, 32, seed=1)
  mesh = mesh_lib.make_mesh((('data', -1),))
  pre = pipeline.Prefetcher(it, mesh_lib.batch_sharding(mesh), depth=3, limit=5)
  got = [np.asarray(pre.materialise(item)['x']) for item in pre]
  pre.close()
  assert len(got) == 5 and it.position == 5
  np.testing.assert_array_equal(got[4], it.batch(4)['x'])


@pytest.mark.parametrize('chunk', [1, 2, 3, None])
def test_prefetcher_chunks_hand_out_every_batch_once_in_order(chunk):
  """Batches travel in chunks (the last one padded); each step still gets exactly batch k, and
  the position counts what was consumed, also when the loop stops mid-chunk."""
  arrays = {'x': np.arange(500, dtype=np.float32), 'y': np.arange(500) % 7}
  it = pipeline.BatchIterator(arrays, 32, seed=1)
  it.set_state({'position': 2, 'global_batch_size': 32})
  mesh = mesh_lib.make_mesh((('data', -1),))
  pre = pipeline.Prefetcher(it, mesh_lib.batch_sharding(mesh), limit=9, chunk=chunk)
  step = jax.jit(pre.materialise)
  got = []
  for item in pre:
    got.append(jax.tree.map(np.asarray, step(item)))
    if len(got) == 4:
      assert it.position == 6
  assert len(got) == 7 and it.position == 9
  reference = pipeline.BatchIterator(arrays, 32, seed=1)
  for k, batch in zip(range(2, 9), got):
    for key in arrays:
      np.testing.assert_array_equal(batch[key], reference.batch(k)[key])
  if chunk is None:  # 32 rows of two small arrays: the most a chunk may hold
    assert pre.chunk == pipeline.Prefetcher.MAX_CHUNK
  pre.close()


def test_prefetcher_rejects_a_bad_chunk():
  it = pipeline.BatchIterator({'x': np.arange(100)}, 10)
  mesh = mesh_lib.make_mesh((('data', -1),))
  with pytest.raises(ValueError, match='chunk=0'):
    pipeline.Prefetcher(it, mesh_lib.batch_sharding(mesh), chunk=0)



"""The streaming input path: random-access sources, exact order and resume, images and text."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from common import classifier
from common import config_lib
from common.data import loader
from common.data import pipeline
from common.data import stream
from tests.common.conftest import tiny_config


@pytest.fixture(scope='module')
def digits():
  return loader.load('digits', 'train')


def test_stream_batches_equal_the_in_memory_ones(digits):
  memory = pipeline.BatchIterator(digits, 64, seed=3)
  streamed = stream.StreamIterator(stream.ArraySource(digits), 64, seed=3)
  for k in (0, 1, 5, memory.steps_per_epoch + 2):  # into the second epoch
    a, b = memory.batch(k), streamed.batch(k)
    np.testing.assert_array_equal(a['inputs'], b['inputs'])
    np.testing.assert_array_equal(a['label'], b['label'])
  streamed.close()


def test_processes_read_their_own_rows_of_each_global_batch(digits):
  source = stream.ArraySource(digits)
  whole = stream.StreamIterator(source, 64, seed=1, process_index=0, process_count=1)
  parts = [stream.StreamIterator(source, 64, seed=1, process_index=i, process_count=2)
           for i in (0, 1)]
  for k in (0, 7):
    joined = np.concatenate([p.batch(k)['label'] for p in parts])
    np.testing.assert_array_equal(joined, whole.batch(k)['label'])


def test_resume_mid_epoch_continues_exactly(digits):
  transform = lambda ex, rng: {'inputs': ex['inputs'] + rng.normal(size=ex['inputs'].shape),
                               'label': ex['label']}
  straight = stream.StreamIterator(stream.ArraySource(digits), 32, seed=0, transform=transform)
  expected = [next(straight) for _ in range(9)]
  first = stream.StreamIterator(stream.ArraySource(digits), 32, seed=0, transform=transform)
  for _ in range(4):
    next(first)
  state = first.get_state()
  resumed = stream.StreamIterator(stream.ArraySource(digits), 32, seed=0, transform=transform)
  resumed.set_state(state)
  for want in expected[4:]:
    np.testing.assert_array_equal(next(resumed)['inputs'], want['inputs'])  # augmentation too


def test_block_shuffle_of_a_large_source_is_a_permutation_per_epoch(monkeypatch):
  monkeypatch.setattr(pipeline.BatchOrder, 'FULL_SHUFFLE_MAX', 100)
  monkeypatch.setattr(pipeline.BatchOrder, 'SHUFFLE_BLOCK', 16)
  order = pipeline.BatchOrder(1000, 10, seed=0)
  for epoch in (0, 1):
    rows = np.concatenate([order.global_indices(epoch * 100 + i) for i in range(100)])
    assert sorted(rows.tolist()) == list(range(1000))
    assert not np.array_equal(rows, np.arange(1000))
  first = np.concatenate([order.global_indices(i) for i in range(100)])
  second = np.concatenate([order.global_indices(100 + i) for i in range(100)])
  assert not np.array_equal(first, second)


def test_images_of_any_size_are_cropped_and_resized():
  with tfds.testing.mock_data(num_examples=24):
    source = stream.tfds_source('imagenet2012', 'train')
    sizes = {source[i]['image'].shape for i in range(6)}
    assert len(sizes) > 1  # mock images differ in size, as ImageNet's do
    train_iter = stream.StreamIterator(source, 8, seed=0,
                                       transform=stream.ImageTransform(32, train=True))
    batch = train_iter.batch(2)
    assert batch['inputs'].shape == (8, 32, 32, 3) and batch['inputs'].dtype == np.float32
    assert 0 <= batch['inputs'].min() and batch['inputs'].max() <= 1
    assert batch['label'].dtype == np.int32
    again = stream.StreamIterator(source, 8, seed=0, transform=stream.ImageTransform(32))
    np.testing.assert_array_equal(again.batch(2)['inputs'], batch['inputs'])
    centre = stream.read(source, [0, 1], stream.ImageTransform(16, train=False))
    assert centre['inputs'].shape == (2, 16, 16, 3)
    with pytest.raises(ValueError, match='differ in the shape of .image.*ImageTransform'):
      stream.StreamIterator(source, 8, seed=0).batch(0)
  with pytest.raises(config_lib.ConfigError, match='size=0'):
    stream.ImageTransform(0)


def test_text_rows_pack_documents():
  docs = [{'text': b'abc'}, {'text': 'de'}, {'text': b'x' * 50}, {'text': b''}]
  rows = stream.TextRows(docs, length=8, docs_per_row=2)
  assert len(rows) == 2
  row = rows[0]  # 'abc' EOS 'de' EOS, then padding
  assert loader.decode_bytes(row['tokens']) == 'abcde'
  assert row['tokens'].tolist()[:7] == [100, 101, 102, 1, 103, 104, 1]
  assert row['weights'].tolist() == [1, 1, 1, 1, 1, 1, 0, 0]
  long_row = rows[1]  # cut at length + 1
  assert long_row['tokens'].shape == (9,) and long_row['weights'].sum() == 8
  with tfds.testing.mock_data(num_examples=6):
    c4 = stream.TextRows(stream.tfds_source('c4/en', 'train'), length=16)
    batch = stream.StreamIterator(c4, 4, seed=0).batch(0)
    assert batch['tokens'].shape == (4, 17) and batch['weights'].shape == (4, 16)


def test_unprepared_tfds_dataset_names_array_record(tmp_path):
  with pytest.raises(loader.DatasetError, match='array_record'):
    stream.tfds_source('cifar10', 'train', data_dir=str(tmp_path))


def test_classifier_trains_from_a_tfds_stream(tmp_path):
  config = tiny_config(dataset='cifar10', input='stream', total_steps=4, batch_size=16,
                       eval_every_steps=0, eval_batch_size=16, log_every_steps=2,
                       eval_splits=(('test', 'test[:20]'),), image_size=8)
  with tfds.testing.mock_data(num_examples=40):
    result = classifier.train_classifier(config, str(tmp_path)).result
  assert int(result.state.step) == 4
  assert 'test/accuracy' in result.history[-1]


def test_images_of_many_sizes_cannot_be_loaded_as_arrays():
  with tfds.testing.mock_data(num_examples=8):
    with pytest.raises(loader.DatasetError, match="differ in size.*input='stream'"):
      loader.load('imagenet2012', 'train')
    assert loader.load('cifar10', 'train')['inputs'].shape == (8, 32, 32, 3)

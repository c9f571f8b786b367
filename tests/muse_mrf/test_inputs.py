"""muse_mrf's streamed input (config.input == 'stream', the imagenet256 variant): images of any
size resized and cropped to the tokenizer's square, tokens computed per streamed batch, bad input
refused; and the per-device memory of its train steps."""

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from common import config_lib
from common import memory as memory_lib
from common.data import loader
from common.data import stream
from configs.muse_mrf import digits
from muse_mrf import experiment
from muse_mrf import inputs
from muse_mrf import memory
from muse_mrf import tokenizers
from muse_mrf import training


class SizedImages:
  """A source of uint8 RGB images of different sizes (as ImageNet's), labels 0..9."""

  def __init__(self, n=12, seed=0, dtype=np.uint8, labels=None):
    rng = np.random.default_rng(seed)
    self.images = [rng.integers(0, 256, size=(int(rng.integers(5, 60)), int(rng.integers(5, 60)),
                                              3)).astype(dtype) for _ in range(n)]
    self.labels = labels if labels is not None else [i % 10 for i in range(n)]

  def __len__(self):
    return len(self.images)

  def __getitem__(self, index):
    return {'image': self.images[index], 'label': self.labels[index]}


def small_stream_config(image_size=32):
  """imagenet256's fields at a small image and VQ: 32 x 32 images, f = 4 (an 8 x 8 grid)."""
  config = digits.get_config('imagenet256')
  with config.unlocked():
    config.image_size = image_size
    config.tokenizer.update({'codebook_size': 16, 'embed_dim': 8, 'width': 8,
                             'num_downsamples': 2})
  return config


def untrained_vq(config):
  size = config.image_size
  model = training.make_vq(config, 3)
  params = model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)))['params']
  return tokenizers.VQTokenizer(model, params, (size, size, 3))


def test_streamed_images_of_different_sizes_give_batches_of_the_tokenizers_shape():
  config = small_stream_config()
  source = SizedImages()
  assert len({source[i]['image'].shape for i in range(len(source))}) > 1
  tokenizer = untrained_vq(config)
  transform = inputs.image_transform(config)
  images = stream.StreamIterator(source, 4, seed=0, transform=transform)
  batch = images.batch(0)
  assert batch['inputs'].shape == (4,) + tokenizer.image_shape == (4, 32, 32, 3)
  assert batch['inputs'].dtype == np.float32 and 0 <= batch['inputs'].min() <= 1
  tokens = inputs.MappedStream(source, 4, seed=0, transform=transform,
                               fn=inputs.TokenBatch(tokenizer, 10, 'train'))
  out = tokens.batch(0)
  assert out['tokens'].shape == (4, 8 * 8) and out['tokens'].dtype == np.int32
  assert 0 <= out['tokens'].min() and out['tokens'].max() < 16
  # The tokens are the tokenizer's of the streamed images, in the stream's order.
  np.testing.assert_array_equal(out['tokens'], tokenizer.encode(batch['inputs']))
  np.testing.assert_array_equal(out['label'], batch['label'])
  # The run's data fingerprint names the tokenizer (a retrained one refuses a resume).
  assert tokens.fingerprint()['map'].startswith('tokens(VQTokenizer:float32[16, 8]:')
  tokens.close()
  images.close()


def test_the_scorers_stream_round_trips_images_through_the_tokenizer():
  config = small_stream_config()
  tokenizer = untrained_vq(config)
  source = inputs.Rows(SizedImages(), 0, 8)
  batches = inputs.MappedStream(source, 4, seed=1, transform=inputs.image_transform(config),
                                fn=inputs.RoundTrip(tokenizer))
  out = batches.batch(1)
  assert out['inputs'].shape == (4, 32, 32, 3)
  plain = stream.StreamIterator(source, 4, seed=1, transform=inputs.image_transform(config))
  np.testing.assert_allclose(out['inputs'],
                             tokenizer.decode(tokenizer.encode(plain.batch(1)['inputs'])))
  read = list(inputs.in_order(inputs.Rows(SizedImages(), 8, 12), inputs.image_transform(config),
                              3))
  assert [len(b['label']) for b in read] == [3, 1]   # the last batch short, padding dropped
  batches.close()
  plain.close()


def test_a_streamed_label_outside_the_classes_is_refused_with_the_split_named():
  config = small_stream_config()
  source = SizedImages(n=8, labels=[0, 1, 2, 3, 4, 5, 10, 7])
  tokens = inputs.MappedStream(source, 8, seed=0, shuffle=False,
                               transform=inputs.image_transform(config),
                               fn=inputs.TokenBatch(untrained_vq(config), 10, 'train'))
  with pytest.raises(loader.DatasetError, match=r'train label 10 at index 6 is outside the 10'):
    tokens.batch(0)
  tokens.close()


def test_images_that_are_not_uint8_are_refused_by_the_stream():
  config = small_stream_config()
  images = stream.StreamIterator(SizedImages(n=4, dtype=np.float32), 4,
                                 transform=inputs.image_transform(config))
  with pytest.raises(ValueError, match=r'expects \(H, W, C\) uint8 images'):
    images.batch(0)
  images.close()


def test_rows_of_a_source_refuse_a_range_outside_it():
  source = SizedImages(n=4)
  assert len(inputs.Rows(source, 1, 4)) == 3
  with pytest.raises(ValueError, match=r'Rows \[2, 5\) of a source of 4'):
    inputs.Rows(source, 2, 5)
  with pytest.raises(IndexError):
    inputs.Rows(source, 1, 3)[2]


@pytest.mark.parametrize('field,value,match', [
    ('input', 'disk', r"input='disk': use one of \('memory', 'stream'\)"),
    ('image_size', None, r"image_size=None: config.input='stream'"),
    ('image_size', 250, r'image_size=250 is not a multiple of 2\^tokenizer.num_downsamples = 16'),
    ('tokenizer.kind', 'grey', r"tokenizer.kind='grey' with config.input='stream'"),
    ('upsample', 2, r"upsample=2 with config.input='stream'"),
    ('sampling.classes', 0, r'sampling.classes=0: expected a whole number >= 1'),
])
def test_a_bad_streamed_config_fails_before_compute(tmp_path, field, value, match):
  config = digits.get_config('imagenet256')
  section, _, key = field.rpartition('.')
  target = config[section] if section else config
  with target.unlocked(), target.ignore_type():
    target[key] = value
  with pytest.raises(config_lib.ConfigError, match=match):
    experiment.check_config(config)
  with pytest.raises(config_lib.ConfigError, match=match):
    experiment.run(config, str(tmp_path))
  assert not os.listdir(tmp_path)


def test_asking_for_more_classes_than_the_dataset_has_is_refused():
  config = digits.get_config('tiny')
  with config.unlocked():
    config.sampling.classes = 3
  assert list(experiment.asked_labels(config, 10)) == [0] * 4 + [1] * 4 + [2] * 4
  config.sampling.classes = 11
  with pytest.raises(config_lib.ConfigError, match=r'sampling.classes=11: digits has 10'):
    experiment.asked_labels(config, 10)


def test_imagenet256_without_prepared_data_stops_with_the_tfds_build_command(tmp_path):
  config = digits.get_config('imagenet256')
  config.data_dir = str(tmp_path / 'empty')
  with pytest.raises(loader.DatasetError, match='tfds build imagenet2012 --file_format=array_record'):
    experiment.run(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run' / 'tokenizer').exists()


def test_the_memory_entry_compiles_each_phase_and_reports_the_largest():
  """Small shapes (the real ones are the rehearsal's): the backbone's parameters and Adam's two
  moments are counted from the model the experiment builds; the largest phase is reported."""
  config = small_stream_config()
  with config.unlocked():
    config.model.update({'num_layers': 1, 'd_model': 32, 'num_heads': 2, 'mlp_dim': 64})
    for loop in ('tokenizer_loop', 'backbone', 'mrf'):
      config[loop].batch_size = 8
      config[loop].sharding = 'data'   # replicated state: per device = the whole count
  spec = ml_collections.ConfigDict({'step': 'muse_mrf.memory:train_steps', 'num_classes': 10})
  backbone = memory.backbone_step(config, spec)
  model = training.make_backbone(config, training.token_grid(config), 10)
  count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(
      jax.eval_shape(training.backbone_init_fn(model), jax.random.key(0))['params']))
  assert backbone.params == 4 * count and backbone.optimizer >= 2 * 4 * count
  estimate = memory_lib.step_memory(config, spec)
  assert estimate.total == max(backbone.total, memory.mrf_step(config, spec).total,
                               memory.tokenizer_step(config, spec).total)
  for phase in ('tokenizer', 'backbone', 'mrf'):
    assert f'{phase} ' in estimate.note.split('the largest of: ')[1]
  with pytest.raises(ValueError, match='rehearsal.memory.phases'):
    memory.train_steps(config, ml_collections.ConfigDict({'phases': ('scorer',)}))


@pytest.mark.slow
def test_the_streamed_experiment_runs_on_mock_imagenet_and_resumes(tmp_path):
  """imagenet256's whole path at small shapes (32 x 32 images, a 1-layer backbone) on mock
  imagenet2012 (random image sizes): the rehearsal's sizes, first run stopping the MRF at step 2,
  the second resuming it to 4 (the real shapes: reproduce --rehearse --only=muse_mrf)."""
  from common import rehearsal  # pylint: disable=g-import-not-at-top
  config = small_stream_config()
  with config.unlocked():
    config.model.update({'num_layers': 1, 'd_model': 32, 'num_heads': 2, 'mlp_dim': 64})
    config.mrf_layer.rank = 4
    config.scorer_model.width = 8
  tfds = loader._import_tfds()  # pylint: disable=protected-access
  with tfds.testing.mock_data(num_examples=config.rehearsal.mock_examples):
    experiment.run(rehearsal.apply(config, first_run=True), str(tmp_path))
    summary = experiment.run(rehearsal.apply(config), str(tmp_path))
  records = rehearsal.metric_records(str(tmp_path))
  assert [r['step'] for r in records['mrf'] if 'loss' in r] == [1, 2, 3, 4]
  assert {k: max(r['step'] for r in v) for k, v in records.items()} == {
      'tokenizer': 2, 'backbone': 2, 'mrf': 4, 'scorer': 2}
  numbers = summary['numbers']
  assert numbers['grid'] == [8, 8] and numbers['codebook_size'] == 16
  assert set(numbers['samplers']) == {'maskgit_T1', 'maskgit_T2', 'mrf_T1',
                                      'unary_scale_only_T1'}
  assert numbers['real_images']['images'] == 2   # 2 classes x 1 sample: as many as a sampler

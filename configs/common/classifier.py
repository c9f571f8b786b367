r"""The platform's reference classifier.

    python -m common.main --config=configs/common/classifier.py:cpu --workdir=/tmp/classifier

Variants (the part after the colon):
  cpu      MLP(256, 256) on the embedded digits, 600 steps of batch 128: about 20 CPU-seconds
           on 2 cores; test accuracy about 0.97 (train loss from 2.3 to about 0.01).
  mnist1d  1-D ResNet (width 32, 3 stages) on 10,000 mnist1d signals, 3,000 steps: about 5 min
           on 2 cores; test accuracy about 0.9.
  cifar10  ResNet-18 on TFDS cifar10 (needs `tfds build cifar10` first), 2-D, 8x batch 64 sharded
           over ('data', -1): for accelerators. Per device (common.memory, the real step compiled
           ahead of time on 8 fake CPU devices): 0.50 GiB (temporaries 0.49): fits v5e, v4, H100.
  imagenet ResNet-18 on TFDS imagenet2012 streamed from array_record files (`tfds build
           imagenet2012 --file_format=array_record`), 224 crops, 90 epochs: for accelerators.
           Per device at batch 1024 over 8 devices: 10.7 GiB (almost all activations and
           temporaries, CPU compilation): fits v5e, v4, H100; over 16+ devices it halves.
Rehearsal (cifar10, imagenet): `python -m reproduce --rehearse --only=classifier` runs each on
8 fake CPU devices under tfds mock data, shrunk by its `rehearsal` section (common.rehearsal).
Any field can be overridden: --config.optimizer.learning_rate=3e-3 --config.mesh="(('data',4),('model',2))".
Re-running the same command resumes from the newest checkpoint in the workdir.
"""

import ml_collections

from configs.common import loop


VARIANTS = ('cpu', 'mnist1d', 'cifar10', 'imagenet')  # get_config args (tests build each)


def rehearsal(dataset: str, input_shape, num_classes: int, overrides=(),
              mock_examples: int = 32) -> ml_collections.ConfigDict:
  """The rehearsal section of an accelerator variant (common.rehearsal): batch 16, 4 steps
  (the first run stops at 2, the second resumes), one evaluation of 16-example batches; the
  real model, mesh and input path."""
  return ml_collections.ConfigDict({
      'dataset': dataset, 'mock_examples': mock_examples,
      'overrides': (('batch_size', 16), ('total_epochs', None), ('total_steps', 4),
                    ('optimizer.warmup_steps', 1), ('log_every_steps', 1),
                    ('eval_every_steps', 4), ('checkpoint_every_steps', 2),
                    ('eval_batch_size', 16)) + tuple(overrides),
      'first_run': (('total_steps', 2),),
      'memory': {'step': 'classifier', 'loop': '', 'model': 'model',
                 'input_shape': input_shape, 'num_classes': num_classes},
  })


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or 'cpu'
  # The loop's fields (seed, batch_size, total_steps, optimizer, cadence, mesh, ...), then the
  # classifier's own: data, model, evaluation.
  config = loop.get_config(batch_size=128, total_steps=600, eval_every_steps=200,
                           checkpoint_every_steps=200)

  # Data. Splits use TFDS's slicing syntax for embedded datasets too.
  config.dataset = 'digits'
  config.dataset_kwargs = ml_collections.ConfigDict()
  config.data_dir = ml_collections.config_dict.placeholder(str)
  config.train_split = 'train'
  config.eval_splits = (('test', 'test'),)  # (name, split) pairs
  config.eval_batch_size = 1024
  # 'memory': the splits are loaded as arrays (and live on the devices when small). 'stream':
  # examples are read on demand (common.data.stream), for data larger than a host; TFDS datasets
  # must then be prepared as array_record.
  config.input = 'memory'
  # Stream only: images resized to this square (Inception crop + flip in training, central crop
  # in evaluation); unset keeps the dataset's own size.
  config.image_size = ml_collections.config_dict.placeholder(int)

  # Model: `name` picks common.models.MODELS[name]; the other fields are its attributes.
  config.model = ml_collections.ConfigDict({'name': 'mlp', 'widths': (256, 256)})
  config.label_smoothing = 0.0

  # The claim the main job's report checks for this experiment.
  config.expected_accuracy = 0.95

  if variant == 'cpu':
    pass
  elif variant == 'mnist1d':
    config.dataset = 'mnist1d'
    config.dataset_kwargs = ml_collections.ConfigDict({'num_samples': 10_000})
    config.model = ml_collections.ConfigDict({
        'name': 'resnet', 'ndim': 1, 'width': 32, 'stage_sizes': (1, 1, 1), 'norm': 'group'})
    config.total_steps = 3000
    config.eval_every_steps = 500
    config.checkpoint_every_steps = 500
    config.optimizer.learning_rate = 3e-3
    config.optimizer.warmup_steps = 100
    config.expected_accuracy = 0.85
  elif variant == 'cifar10':
    config.dataset = 'cifar10'
    config.model = ml_collections.ConfigDict({
        'name': 'resnet', 'ndim': 2, 'width': 64, 'stage_sizes': (2, 2, 2, 2), 'norm': 'batch'})
    config.batch_size = 512
    config.total_steps = None
    config.total_epochs = 100.0
    config.optimizer = loop.optimizer(name='momentum', learning_rate=0.4, warmup_steps=500,
                                      weight_decay=5e-4)
    config.log_every_steps = 100
    config.eval_every_steps = 1000
    config.checkpoint_every_steps = 1000
    config.sharding = 'fsdp'
    config.expected_accuracy = 0.93
    config.rehearsal = rehearsal(
        'cifar10', (32, 32, 3), 10, overrides=(('eval_splits', (('test', 'test'),)),))
  elif variant == 'imagenet':
    config.dataset = 'imagenet2012'
    config.input = 'stream'
    config.image_size = 224
    config.eval_splits = (('validation', 'validation'),)
    config.eval_batch_size = 1024
    config.model = ml_collections.ConfigDict({
        'name': 'resnet', 'ndim': 2, 'width': 64, 'stage_sizes': (2, 2, 2, 2), 'norm': 'batch',
        'stem_strides': 2})
    config.batch_size = 1024
    config.total_steps = None
    config.total_epochs = 90.0
    config.optimizer = loop.optimizer(name='momentum', learning_rate=0.4, warmup_steps=5 * 1250,
                                      weight_decay=5e-5)
    config.log_every_steps = 100
    config.eval_every_steps = 5000
    config.checkpoint_every_steps = 2000
    config.sharding = 'fsdp'
    config.expected_accuracy = 0.69
    config.rehearsal = rehearsal('imagenet2012', (224, 224, 3), 1000)
  else:
    raise ValueError(f'Unknown variant {variant!r}; use one of {VARIANTS}.')
  config.lock()  # a misspelt field is an error (with the closest name), not a new field
  return config

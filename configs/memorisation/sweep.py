r"""What larger classifiers memorise: Feldman scores of K subset models at each width, paired.

    python -m memorisation.main --config=configs/memorisation/sweep.py:cpu --workdir=/tmp/mem

At each model size one common.ensemble run trains the K subset models (int(f N) examples each,
f = 0.7, the same masks at every size) and R models on the full training set; then hold-out
retraining fine-tunes the K models on their held-out examples; on the datasets listed in
`distill.datasets` students at `distill.student_sizes` learn from the teacher of the same subset
(the largest size) at temperature tau.

Variants:
  cpu     digits (1,497 train / 300 test, 5% of training labels flipped) and mnist1d (1,600 /
          400), one-hidden-layer MLPs of widths 2, 4, 8, 16, 64, 256 (digits) and 4, 8, 16, 32,
          128, 512 (mnist1d); K = 64 subset models + R = 8 full-data models per width, 60 epochs
          of batch 128, Adam 1e-2 (cosine); hold-out retraining 10 epochs at 1e-3; distillation
          on digits (teacher = width 256 of the same subset, tau = 4, alpha = 0) for students of
          widths 8, 16, 64, beside students of a full-data teacher and one-hot models of another
          seed (the diagnosis). Measured: about 140 CPU-s (user + sys; 8 min wall on a machine
          shared by ~7 jobs). Intervals (95%): class fractions over 200 resamples of models and
          examples, recentred, half-width 0.01-0.03, against a 200-draw permutation null
          (digits' null puts 0.067 of the examples in 'decreasing' by noise alone); proxy
          statistics over 200 resamples of examples, half-width 0.03-0.05; distillation's mean
          memorisation change +-0.0035, test accuracy change +-0.008 (models, paired across arms,
          and examples). Verdict: not reproduced (see memorisation/README.md).
  tiny    digits only, K = 32, widths 4, 16, 64, 20 epochs, distillation at one width (the
          end-to-end test).
  study   K = 256, R = 16, eight widths per dataset, 100 epochs, mnist1d at 4,000 examples,
          distillation on both datasets.
  cifar100  ResNet-18 at widths 8-128 on TFDS cifar100 (`tfds build cifar100` first), K = 512:
          for accelerators, the models spread over the devices. Per device on 8 devices (common.memory:
          the widest model's ensemble step compiled ahead of time, each device running its own
          models): 26.4 GiB, of which 21.7 GiB the state of 65 width-128 ResNet-18s and 4.2
          GiB the temporaries of a one-model dispatch (24 GiB when a vmap let XLA gather every
          model of a dispatch onto every device): fits v4, H100; on 64 devices the state is 8x
          smaller.
  imagenet  ResNet-18 at widths 16-96 on TFDS imagenet2012 at 64x64, K = 128. Does not run as
          written: the study reads its splits as host arrays, which ImageNet's images of many sizes
          refuse (and 1.28M x 64x64x3 float32 is 63 GB on each device); its rehearsal fails with
          that error until the study streams.
Rehearsal: `python -m reproduce --rehearse --only=memorisation` (see `_rehearsal`).
"""

import ml_collections

from configs.common import loop

VARIANTS = ('cpu', 'tiny', 'study', 'cifar100', 'imagenet')  # get_config args (tests build each)


def _loop(batch_size, epochs, learning_rate, **overrides):
  # Models on the 'model' axis of the mesh (each device trains M / devices of them).
  return loop.get_config(batch_size=batch_size, total_epochs=epochs, log_every_steps=100,
                         checkpoint_every_steps=100_000, mesh=(('data', 1), ('model', -1)),
                         optimizer=loop.optimizer(learning_rate=learning_rate), **overrides)


def _dataset(dataset, model, size_field, sizes, train_loop, label_noise=0.0, num_samples=None,
             image_shape=None):
  """size_field: the model field the sweep sets to each of `sizes` (e.g. 'widths' of an MLP)."""
  return ml_collections.ConfigDict({
      'dataset': dataset,
      'dataset_kwargs': {'num_samples': num_samples} if num_samples else {},
      'train_split': 'train', 'test_split': 'test',
      'label_noise': label_noise,     # fraction of training labels flipped to another class
      'model': model, 'size_field': size_field, 'sizes': sizes,
      'loop': train_loop,
      # Hold-out retraining: the subset models fine-tuned on their held-out examples.
      'holdout_epochs': 10.0, 'holdout_learning_rate': 1e-3,
      'image_shape': image_shape or (),  # how to draw an input (empty: as stored)
  })


def _rehearsal(config, variant: str) -> ml_collections.ConfigDict:
  """common.rehearsal's section: K = 8 and R = 8 (each a multiple of the 8 fake devices), the first two
  widths of the sweep, one epoch of batch 4 on 16 mock examples, one student size, 20 resamples;
  the real ResNet-18, mesh and ensemble path. The memory estimate is the largest width's step
  with all K + R models over the devices at hand."""
  data = config.datasets[variant]
  d = f'datasets.{variant}.'
  real = {'cifar100': ((32, 32, 3), 100, 50_000), 'imagenet': ((64, 64, 3), 1000, 1_281_167)}
  shape, classes, examples = real[variant]
  return ml_collections.ConfigDict({
      'dataset': data.dataset, 'mock_examples': 16,
      'overrides': (
          ('num_models', 8), ('num_full_models', 8), (d + 'sizes', tuple(data.sizes[:2])),
          (d + 'loop.batch_size', 4), (d + 'loop.total_epochs', 1.0),
          (d + 'loop.log_every_steps', 1), (d + 'loop.optimizer.warmup_steps', 1),
          (d + 'holdout_epochs', 1.0), ('distill.student_sizes', (0,)),
          ('trajectory.bootstrap', 20), ('trajectory.model_bootstrap', 20),
          ('trajectory.null_draws', 20), ('trajectory.proxy_bootstrap', 20)),
      'first_run': (),
      'memory': {'step': 'ensemble', 'loop': d + 'loop', 'model': d + 'model',
                 'model_fields': ((data.size_field, data.sizes[-1]),), 'input_shape': shape,
                 'num_classes': classes, 'num_models': config.num_models + 8,
                 'num_examples': examples},
  })


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or 'cpu'
  config = ml_collections.ConfigDict()
  config.data_dir = ml_collections.config_dict.placeholder(str)
  mlp = lambda: {'name': 'mlp', 'widths': (16,)}
  config.datasets = ml_collections.ConfigDict({
      'digits': _dataset('digits', mlp(), 'widths', ((2,), (4,), (8,), (16,), (64,), (256,)),
                         _loop(128, 60.0, 1e-2), label_noise=0.05, image_shape=(8, 8)),
      'mnist1d': _dataset('mnist1d', mlp(), 'widths', ((4,), (8,), (16,), (32,), (128,), (512,)),
                          _loop(128, 60.0, 1e-2), num_samples=2000),
  })
  config.dataset_names = ('digits', 'mnist1d')
  config.num_models = 64          # K subset models per size
  config.num_full_models = 8      # R models on the full training set (the loss/confidence/
  #                                 gradient/learning-speed proxies), in the same ensemble
  config.fraction = 0.7           # f: each subset holds int(f N) training examples
  config.mask_seed = 0
  config.chunk_target = 0         # models per dispatch (0: common.ensemble's cost-based choice)
  # jax's PRNG for the run ('' keeps the default threefry): XLA:CPU takes ~20 s to compile a
  # vmapped threefry initialisation of 72 small MLPs on this machine, ~3 s with 'rbg'.
  config.prng_impl = 'rbg'
  config.distill = ml_collections.ConfigDict({
      'datasets': ('digits',),
      'teacher_size': -1,             # index into sizes: the teacher of subset k is model k there
      'student_sizes': (2, 3, 4),     # indices into sizes
      'tau': 4.0, 'alpha': 0.0,       # alpha: weight of the one-hot term (0: soft labels only)
      # Also students of a teacher trained on all the data (full model k mod R at teacher_size):
      # the diagnosis compares them with the card's protocol (teacher k saw only subset k).
      'full_teacher': True,
      # Also one-hot models of another init seed at the student sizes: memorisation re-estimated
      # independently of the sweep that defines the trajectory classes (a class picked on high
      # scores at a student size regresses in any re-estimate); the per-class change is
      # measured against it.
      'onehot_control': True,
  })
  config.trajectory = ml_collections.ConfigDict({
      # Tolerance t_i = max(floor, z sqrt(2) rms_s se_i(s)) (memorisation.trajectories): a change
      # between two sizes must exceed z standard errors of a difference. z = 2: with z = 1 a
      # flat example's noise alone crosses it in about a third of the cases.
      'z': 2.0, 'floor': 0.05,
      'bootstrap': 1000,              # resamples of examples (shown, not deciding)
      # Resamples of models and examples (the estimator's noise too; recentred on the point
      # estimate, since duplicated models inflate every non-flat class): the interval the class,
      # mislabelled and distillation checks use.
      'model_bootstrap': 200,
      # Draws of the permutation null (each example's mask column shuffled across the models:
      # memorisation zero by construction, same K, same correctness): its 95th percentile is the
      # bar a class fraction must clear.
      'null_draws': 200,
      'proxy_bootstrap': 200,         # resamples of examples for the proxy checks
  })
  # The checks, fixed before the run; each decided by its interval (report.check).
  config.checks = ml_collections.ConfigDict({
      # decreasing, cap-shaped, increasing: the fraction's models-and-examples interval above
      # this quantile of the permutation null's fractions (evidence 'null')
      'class_null_quantile': 0.95,
      # "most examples memorise less under larger models": decreasing minus increasing > this
      'decreasing_minus_increasing': 0.0,
      # fraction of the mislabelled examples in the increasing class: above this
      'mislabelled_increasing': 0.5,
      # proxies at a fixed size: median over proxies of the median over sizes of |Spearman| >=
      'fixed_size_corr': 0.3,
      # across sizes: median over proxies of the oriented Spearman correlation of the change
      # (largest minus smallest size) with memorisation's change, minus this x the fixed-size
      # value, < 0
      'trend_ratio': 0.5,
      # distillation: distilled minus one-hot mean memorisation (mean over student sizes) < this
      'distill_mem_change': 0.0,
      # distillation: change on the increasing class minus the lowest change of the other
      # classes (decreasing, cap, flat) < this (it falls most on the increasing examples)
      'distill_most_on_increasing': 0.0,
      # distillation: student test accuracy minus one-hot's (mean over student sizes) >= this
      'distill_accuracy_margin': -0.01,
  })

  if variant == 'cpu':
    pass
  elif variant == 'tiny':
    config.dataset_names = ('digits',)
    config.datasets.digits.sizes = ((4,), (16,), (64,))
    config.datasets.digits.loop.total_epochs = 20.0
    config.datasets.digits.holdout_epochs = 2.0
    config.num_models = 32
    config.num_full_models = 8
    config.distill.student_sizes = (1,)
    config.trajectory.bootstrap = 200
    config.trajectory.model_bootstrap = 20
    config.trajectory.null_draws = 20
    config.trajectory.proxy_bootstrap = 20
  elif variant == 'study':
    config.datasets.digits.sizes = ((2,), (4,), (8,), (16,), (32,), (64,), (256,), (1024,))
    config.datasets.mnist1d.sizes = ((4,), (8,), (16,), (32,), (64,), (128,), (512,), (2048,))
    config.datasets.mnist1d.dataset_kwargs.num_samples = 5000
    for name in ('digits', 'mnist1d'):
      config.datasets[name].loop.total_epochs = 100.0
    config.num_models = 256
    config.num_full_models = 16
    config.distill.datasets = ('digits', 'mnist1d')
    config.distill.student_sizes = (2, 3, 4, 5)
  elif variant in ('cifar100', 'imagenet'):
    if variant == 'cifar100':
      widths = ((8,), (16,), (32,), (64,), (128,))
      data = _dataset('cifar100', {'name': 'resnet', 'ndim': 2, 'width': 16,
                                   'stage_sizes': (2, 2, 2, 2), 'norm': 'group'}, 'width',
                      tuple(w[0] for w in widths), _loop(256, 100.0, 0.1), image_shape=(32, 32, 3))
      config.num_models = 512
    else:
      data = _dataset('imagenet2012', {'name': 'resnet', 'ndim': 2, 'width': 16,
                                       'stage_sizes': (2, 2, 2, 2), 'norm': 'group',
                                       'stem_strides': 2}, 'width', (16, 32, 64, 96),
                      _loop(1024, 40.0, 0.4), image_shape=(64, 64, 3))
      data.train_split = 'train'
      data.test_split = 'validation'
      config.num_models = 128
    data.loop.optimizer = loop.optimizer(name='momentum', learning_rate=data.loop.optimizer
                                         .learning_rate, warmup_steps=500, weight_decay=5e-4)
    data.holdout_epochs = 5.0
    data.holdout_learning_rate = 0.01
    config.datasets = ml_collections.ConfigDict({variant: data})
    config.dataset_names = (variant,)
    config.num_full_models = 8
    config.chunk_target = 0
    config.distill.datasets = (variant,)
    config.distill.student_sizes = (1, 2)
    config.rehearsal = _rehearsal(config, variant)
  else:
    raise ValueError(f'Unknown variant {variant!r}; use one of {VARIANTS}.')
  config.lock()
  return config

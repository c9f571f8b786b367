r"""Student-teacher deviations in self-distillation: the eigenspace demo, then mnist1d and digits.

    python -m distill.main --config=configs/distill/mnist1d.py:cpu --workdir=/tmp/distill

Variants:
  cpu       linear-GD eigenspace demo (n=200, d=100, lambda_k ~ 1/k, noise 0.5, 10 random
            problems); then self-distillation with shift augmentation, 8 seeds, teacher / one-hot /
            distilled / late-switch (at 50%) students, alpha = 0, tau = 1, in six regimes: mnist1d
            (8,000 train, MLP(128, 128)), digits (1,497 train, MLP(32)), mnist1d with 1,000
            training examples, with 30% label noise, with students trained 2x longer and 0.25x as
            long; each regime's teachers one common.ensemble run, its students another (a seed's
            students in one batch order, the seeds' orders independent). 145 CPU-seconds (10.5 min
            wall on the busy shared 2-core machine). Every check is decided by a 95% Student-t
            interval over the seeds: +-0.007 to +-0.014 test accuracy for a paired distilled -
            one-hot gain, +-0.003 to +-0.020 in probability and +-0.019 (mnist1d) to +-0.037
            (digits) in log-odds slope for the exaggeration rows, +-0.007 in test MSE for the
            eigenspace check. See
            distill/README.md and results/cpu/distill.json.
  tiny      digits only, one regime, 2 seeds, short training (the end-to-end test).
  study     the cpu regimes with 16 seeds and 40 linear problems (intervals ~0.6x the cpu's).
  cifar100  ResNet-18 teachers and students on TFDS cifar100 (crop + flip), for accelerators.
            Teachers and students are ensembles over the mesh's 8-way 'model' axis. Per device
            (distill.memory: the students' step at batch 256 with the teacher stack, compiled
            ahead of time on 8 fake devices): 2.92 GiB: fits v5e, v4, H100. Rehearsed by
            `python -m reproduce --rehearse --only=distill` (8 steps, 582 s, 9.2 GiB of host
            memory on 2 cores beside other work).
"""

import ml_collections

from configs.common import loop as loop_config


def _dataset(dataset, model, steps, learning_rate, augment, **splits):
  return ml_collections.ConfigDict({
      'dataset': dataset, 'dataset_kwargs': splits.pop('dataset_kwargs', {}),
      'train_split': splits.pop('train_split', 'train'),
      'test_split': splits.pop('test_split', 'test'),
      'model': model, 'steps': steps, 'learning_rate': learning_rate, 'augment': augment})


def _regime(data, train_size=0, label_noise=0.0, student_length=1.0):
  """train_size 0: the whole training split; student_length: student steps / teacher steps."""
  return ml_collections.ConfigDict({'data': data, 'train_size': train_size,
                                    'label_noise': label_noise, 'student_length': student_length})


VARIANTS = ('cpu', 'tiny', 'study', 'cifar100')  # get_config args (tests build each)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or 'cpu'
  config = ml_collections.ConfigDict()
  # The loop's fields; each model's length, seed and learning rate are set per run.
  config.loop = loop_config.get_config(batch_size=64, total_steps=3000)
  config.data_dir = ml_collections.config_dict.placeholder(str)
  config.datasets = ml_collections.ConfigDict({
      'mnist1d': _dataset('mnist1d', {'name': 'mlp', 'widths': (128, 128)}, 3000, 1e-2,
                          {'max_shift': 2, 'flip': False, 'noise': 0.0},
                          dataset_kwargs={'num_samples': 10_000}),
      'digits': _dataset('digits', {'name': 'mlp', 'widths': (32,)}, 1500, 3e-3,
                         {'max_shift': 1, 'flip': False, 'noise': 0.0}),
  })
  config.regimes = ml_collections.ConfigDict({
      'mnist1d': _regime('mnist1d'),
      'digits': _regime('digits'),
      'mnist1d_small': _regime('mnist1d', train_size=1000),
      'mnist1d_noise': _regime('mnist1d', label_noise=0.3),
      'mnist1d_long': _regime('mnist1d', student_length=2.0),
      'mnist1d_short': _regime('mnist1d', student_length=0.25),
  })
  config.regime_names = ('mnist1d', 'digits', 'mnist1d_small', 'mnist1d_noise', 'mnist1d_long',
                         'mnist1d_short')
  config.deviation_regimes = ('mnist1d', 'digits')  # where the exaggeration check is made
  config.noise_seed = 0
  config.seeds = 8
  # The distillation loss: alpha CE(y, p_S) + (1 - alpha) tau^2 CE(p_T(tau), p_S(tau)).
  config.alpha = 0.0
  config.tau = 1.0
  config.switch_fraction = 0.5  # late distillation: one-hot for this fraction of the steps
  config.bins = (0.0, 0.2, 0.4, 0.6, 0.8, 0.95, 1.0)
  config.eigenspace = ml_collections.ConfigDict({
      'n': 200, 'd': 100, 'decay': 1.0, 'noise': 0.5, 'test_size': 2000, 'seeds': 10,
      'eta_times_lambda_max': 0.5, 'teacher_steps': 200, 'student_steps': 200})
  # The checks, fixed before the run (see distill/claims.py and the README). Each is decided by a
  # 95% Student-t interval over the seeds.
  config.checks = ml_collections.ConfigDict({
      # Exaggeration: unsure where p < unsure_below, sure where p >= sure_from; at least
      # min_points such examples in every seed, else inconclusive.
      'unsure_below': 0.4, 'sure_from': 0.95, 'sure_tolerance': 0.01, 'min_points': 20,
      'excess_slope_above': 0.0,      # student's log-odds slope minus the one-hot control's
      'reference_slope_above': 1.0,   # instrumental slope against a teacher of another seed
      # Late switching: regimes whose paired distilled - one-hot gain lies above min_gain; the
      # late student keeps >= recovery_fraction of it.
      'min_gain': 0.0, 'recovery_fraction': 0.5,
      # Eigenspace: student - teacher test MSE below this (deciding); the ratios are shown.
      'mse_difference_below': 0.0,
      'ratio_fraction': 0.1, 'ratio_top_min': 0.9, 'ratio_bottom_max': 0.5})

  if variant == 'cpu':
    pass
  elif variant == 'tiny':
    config.regimes = ml_collections.ConfigDict({'digits': _regime('digits')})
    config.regime_names = ('digits',)
    config.deviation_regimes = ('digits',)
    config.datasets.digits.steps = 200
    config.datasets.digits.learning_rate = 3e-3
    config.seeds = 2
    config.eigenspace.seeds = 5
  elif variant == 'study':
    config.seeds = 16
    config.eigenspace.seeds = 40
  elif variant == 'cifar100':
    config.loop = loop_config.get_config(
        batch_size=256, total_steps=60_000, mesh=(('data', -1), ('model', 8)),
        log_every_steps=200,
        optimizer=loop_config.optimizer(name='momentum', learning_rate=0.1, warmup_steps=1000,
                                        weight_decay=5e-4))
    resnet18 = {'name': 'resnet', 'ndim': 2, 'width': 64, 'stage_sizes': (2, 2, 2, 2),
                'norm': 'batch'}
    config.datasets = ml_collections.ConfigDict({
        'cifar100': _dataset('cifar100', resnet18, 60_000, 0.1,
                             {'max_shift': 4, 'flip': True, 'noise': 0.0},
                             train_split='train', test_split='test'),
    })
    config.regimes = ml_collections.ConfigDict({
        'cifar100': _regime('cifar100'),
        'cifar100_long': _regime('cifar100', student_length=2.0),
    })
    config.regime_names = ('cifar100', 'cifar100_long')
    config.deviation_regimes = ('cifar100',)
    config.eigenspace.seeds = 0  # the linear demo runs with the cpu variant
    # Teachers (8) and students (24) are common.ensemble runs whose models spread over the 8-way
    # 'model' axis (any multiple of 8 devices: the rest is 'data'); with a 1-way model axis every
    # device held every model's state and evaluated every model.
    # common.rehearsal: the first regime, 4 steps of batch 8 on 32 mock examples; the real
    # ResNet-18, seeds, mesh and ensemble path (8 seeds: the model axis needs a multiple of 8).
    # Memory: the students' step at batch 256 with the teacher stack (distill/memory.py).
    config.rehearsal = ml_collections.ConfigDict({
        'dataset': 'cifar100', 'mock_examples': 32,
        'overrides': (('regime_names', ('cifar100',)),
                      ('deviation_regimes', ('cifar100',)), ('datasets.cifar100.steps', 4),
                      ('loop.batch_size', 8), ('loop.total_steps', 4),
                      ('loop.log_every_steps', 1), ('loop.optimizer.warmup_steps', 1)),
        'first_run': (),
        'memory': {'step': 'distill.memory:student_step', 'loop': 'loop',
                   'model': 'datasets.cifar100.model', 'input_shape': (32, 32, 3),
                   'num_classes': 100, 'num_examples': 50_000},
    })
  else:
    raise ValueError(f'Unknown variant {variant!r}; use one of {VARIANTS}.')
  config.lock()
  return config

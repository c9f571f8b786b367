r"""SCOD plug-in estimators: 2-D Gaussians in closed form, then mnist1d and digits split by class.

    python -m abstain.main --config=configs/abstain/mnist1d.py:cpu --workdir=/tmp/abstain

Inliers are classes 0-5, auxiliary outliers (labelled, for training and validation) classes 6-7,
test outliers classes 8-9; the wild mixture is unlabelled held-out inliers plus other examples of
classes 8-9 (outlier share 0.3). Test: the test split's classes 0-5 and 8-9.

Variants:
  cpu    Gaussians at n = 100 / 1,000 / 10,000 per class (5 seeds, 30,000 test draws); mnist1d
         (10,000 signals; MLP(256, 256)) and digits (MLP(128)); 10 seeds (80 models); c_fn 0.25 /
         0.5 / 0.75; budgets 0.05-0.4. 138 CPU-seconds (13 min wall on the shared 2-core machine
         at load ~17). Each check is a per-seed paired difference of SCOD risks (mean over
         budgets) decided by its 95% Student-t interval: +-0.001 to +-0.008 on mnist1d, +-0.005 to
         +-0.03 on digits, +-0.0003 to +-0.007 on the Gaussians. Recorded:
         results/cpu/abstain.json (not reproduced: 27 of 36 rows hold, 5 fail, 4 inconclusive);
         see abstain/README.md.
  tiny   digits only, 1 seed, short training, small Gaussians (the end-to-end test, ~40 s).
  study  the cpu study with 20 seeds (Gaussians 10) and mnist1d at 30,000 signals (the card's
         pilot size).
  cifar100  CIFAR-100 classes 0-79 as inliers, 80-99 as auxiliary outliers, CIFAR-10 as the test
         outliers (TFDS; `tfds build cifar100 cifar10` first), ResNet-18s, 10 seeds: for
         accelerators. Per device (common.memory, the inlier classifier's step at batch 512
         compiled ahead of time on 8 fake devices, FSDP): 0.50 GiB (temporaries 0.49): fits v5e,
         v4, H100. Rehearsed by `python -m reproduce --rehearse --only=abstain`.
"""

import ml_collections

from configs.common import classifier as classifier_config


def _model(model, steps, lr):
  return ml_collections.ConfigDict({'model': model, 'total_steps': steps, 'learning_rate': lr})


def _split_by_class(dataset, num_samples=None, inlier=(0, 1, 2, 3, 4, 5), aux=(6, 7),
                    test_out=(8, 9), outlier_dataset=''):
  return {
      'dataset': dataset,
      'dataset_kwargs': {'num_samples': num_samples} if num_samples else {},
      'train_split': 'train', 'test_split': 'test',
      # Classes of `dataset` that are inliers, and the labelled auxiliary outliers; test-type
      # outliers are these classes of `outlier_dataset` ('' = the same dataset).
      'inlier_classes': inlier, 'aux_classes': aux,
      'outlier_dataset': outlier_dataset, 'test_outlier_classes': test_out,
      # Fractions of the training split's inliers held out for validation and for the wild mixture.
      'val_fraction': 0.2, 'wild_fraction': 0.2,
      'aux_val_fraction': 0.25,   # auxiliary outliers held out for validation
      'wild_val_fraction': 0.25,  # of the wild mixture, held out for tuning
  }


VARIANTS = ('cpu', 'tiny', 'study', 'cifar100')  # get_config args (tests build each)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or 'cpu'
  config = ml_collections.ConfigDict()
  config.classifier = classifier_config.get_config('cpu')  # the loop's fields (batch, mesh, ...)
  config.data_dir = ml_collections.config_dict.placeholder(str)
  config.datasets = ml_collections.ConfigDict({
      'mnist1d': _split_by_class('mnist1d', 10_000),
      'digits': _split_by_class('digits'),
  })
  config.models = ml_collections.ConfigDict({
      'mlp256x2': _model({'name': 'mlp', 'widths': (256, 256)}, 1500, 1e-3),
      'mlp256x2_ood': _model({'name': 'mlp', 'widths': (256, 256)}, 1000, 1e-3),
      'mlp128': _model({'name': 'mlp', 'widths': (128,)}, 600, 1e-3),
      'mlp128_ood': _model({'name': 'mlp', 'widths': (128,)}, 400, 1e-3),
  })
  config.dataset_names = ('mnist1d', 'digits')
  # (the inlier classifier and OE model, the binary inlier-vs-outlier / -mixture classifiers).
  config.dataset_models = ml_collections.ConfigDict({
      'mnist1d': ('mlp256x2', 'mlp256x2_ood'), 'digits': ('mlp128', 'mlp128_ood')})
  config.seeds = 10
  config.wild_pi = 0.3          # the outlier share of the wild mixture (known to the estimator)
  config.c_fns = (0.25, 0.5, 0.75)
  config.budgets = (0.05, 0.1, 0.2, 0.3, 0.4)
  config.oe_weight = 0.5        # Outlier Exposure's weight on the uniform-target term
  config.odin = ml_collections.ConfigDict({'temperature': 1000.0, 'epsilon': 0.0014})
  config.gaussians = ml_collections.ConfigDict({
      'sizes': (100, 1_000, 10_000), 'seeds': 5, 'test_size': 30_000, 'pi': 1 / 3,
      'pi_mix': 0.3, 'figure_c_fn': 0.75, 'figure_budget': 0.2})
  # The checks, fixed before the run. Each is a per-seed paired difference of SCOD risks (mean
  # over budgets) at one c_fn, decided by its 95% Student-t interval over seeds: holds when the
  # whole interval is on the claimed side, fails when none of it is, else inconclusive.
  config.checks = ml_collections.ConfigDict({
      # plug-in risk - MSP risk, and plug-in risk - OOD-score risk (two rows): at most this.
      'noise_margin': 0.01,
      # with the wild mixture: MSP risk - plug-in risk, at least this.
      'clear_gain': 0.03,
      # Gaussians: plug-in risk - Bayes risk at the largest n, at most this.
      'bayes_margin': 0.01,
      # Gaussians: (plug-in - Bayes at the largest n) - (the same at the smallest n): at most this.
      'bayes_gap_growth': 0.0,
  })

  if variant == 'cpu':
    pass
  elif variant == 'tiny':
    config.dataset_names = ('digits',)
    config.models.mlp128.total_steps = 150
    config.models.mlp128_ood.total_steps = 100
    config.seeds = 1  # one seed: its intervals are unbounded, its checks inconclusive
    config.budgets = (0.1, 0.3)
    config.gaussians.sizes = (100, 1_000)
    config.gaussians.seeds = 2
    config.gaussians.test_size = 5_000
  elif variant == 'study':
    config.datasets.mnist1d.dataset_kwargs.num_samples = 30_000
    config.seeds = 20
    config.gaussians.seeds = 10
  elif variant == 'cifar100':
    config.classifier = classifier_config.get_config('cifar10')
    with config.classifier.unlocked():
      config.classifier.total_epochs = None
    config.datasets = ml_collections.ConfigDict({'cifar100': _split_by_class(
        'cifar100', inlier=tuple(range(80)), aux=tuple(range(80, 100)),
        test_out=tuple(range(10)), outlier_dataset='cifar10')})
    resnet18 = {'name': 'resnet', 'ndim': 2, 'width': 64, 'stage_sizes': (2, 2, 2, 2),
                'norm': 'batch'}
    config.models = ml_collections.ConfigDict({
        'resnet18': _model(resnet18, 40_000, 0.4), 'resnet18_ood': _model(resnet18, 20_000, 0.4)})
    config.dataset_names = ('cifar100',)
    config.dataset_models = ml_collections.ConfigDict({'cifar100': ('resnet18', 'resnet18_ood')})
    config.odin.epsilon = 0.002
    # common.rehearsal: one seed, the four ResNet-18s 4 steps of batch 16 on 128 mock examples
    # of cifar100 and of cifar10 (the test outliers: mock data provides every dataset; under it
    # every split is the same 128), two budgets, a small Gaussian study; the real models, mesh
    # and input path. The first run stops the inlier classifier (and Outlier Exposure) at step 2,
    # the second resumes them. Memory: the inlier classifier's step (ResNet-18, 80 classes) at
    # the real batch (512) and mesh.
    config.rehearsal = ml_collections.ConfigDict({
        'dataset': 'cifar100', 'mock_examples': 128,
        'overrides': (('seeds', 1), ('models.resnet18.total_steps', 4),
                      ('models.resnet18_ood.total_steps', 4), ('classifier.batch_size', 16),
                      ('classifier.optimizer.warmup_steps', 1), ('budgets', (0.1, 0.3)),
                      ('gaussians.sizes', (100, 1_000)), ('gaussians.seeds', 2),
                      ('gaussians.test_size', 5_000)),
        'first_run': (('models.resnet18.total_steps', 2),),
        'memory': {'step': 'classifier', 'loop': 'classifier', 'model': 'models.resnet18.model',
                   'input_shape': (32, 32, 3), 'num_classes': 80},
    })
  else:
    raise ValueError(f'Unknown variant {variant!r}; use one of {VARIANTS}.')
  config.lock()
  return config

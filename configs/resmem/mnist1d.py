r"""ResMem on mnist1d (two training-set sizes) and digits, plus the stylised linear regression.

    python -m resmem.main --config=configs/resmem/mnist1d.py:cpu --workdir=/tmp/resmem

Variants:
  cpu       mnist1d with 3,600 and 14,400 training signals (400 / 1,600 held out for tuning,
            1,000 / 4,000 test), base MLPs (32), (128) (cannot fit) and (256, 256) (interpolates);
            digits with MLP (4) and (256, 256); 5 seeds; regression d in {2, 3, 5},
            n in {100 ... 100,000}, 3 seeds. 196 CPU-seconds (user + sys, from scratch).
            Every check is decided by the 95% Student-t interval of its per-seed values
            (config.checks; t = 2.78 at 5 seeds, 4.30 at the regression's 3). In the recorded
            run the half-widths were 0.007-0.014 for ResMem's gain over an mnist1d base, 0.016
            on digits' MLP (4) (whose training accuracy varies most across seeds), 0.013-0.021
            for the growth differences, 0.006-0.007 for the interpolating bases' gains, and
            0.025-0.042 for the regression's slopes (about -0.5). The numbers: resmem/README.md (a
            block generated from results/cpu/resmem.json).
  tiny      digits only, two short-trained models, 2 seeds, small regression (the test).
  cifar100  ResNet bases on TFDS cifar100 (prepare it with `tfds build` first), the k-NN database
            sharded over the mesh's 'data' axis: for accelerators. Per device (common.memory,
            ResNet-18's step at batch 512 on 8 fake devices, FSDP): 0.50 GiB: fits v5e, v4,
            H100. Rehearsed by `python -m reproduce --rehearse --only=resmem`. (No ImageNet variant: the
            experiment holds its splits as host arrays, which ImageNet's decoded images exceed; the
            streaming path of common/data/stream.py trains the classifier, not yet this study.)
"""

import ml_collections

from configs.common import classifier as classifier_config


def _model(model, steps, lr):
  return ml_collections.ConfigDict({'model': model, 'total_steps': steps, 'learning_rate': lr})


def _mnist1d(num_samples, num_train):
  return {'dataset': 'mnist1d', 'dataset_kwargs': {'num_samples': num_samples},
          'train_split': f'train[:{num_train}]', 'val_split': f'train[{num_train}:]',
          'test_split': 'test'}


VARIANTS = ('cpu', 'tiny', 'cifar100')  # get_config args (tests build each)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or 'cpu'
  config = ml_collections.ConfigDict()
  config.classifier = classifier_config.get_config('cpu')  # the loop's fields (batch, mesh, ...)
  config.data_dir = ml_collections.config_dict.placeholder(str)
  config.datasets = ml_collections.ConfigDict({
      'mnist1d_5k': _mnist1d(5_000, 3_600),     # mnist1d keeps 80% for train: 4,000 -> 3,600 + 400
      'mnist1d_20k': _mnist1d(20_000, 14_400),  # 16,000 -> 14,400 + 1,600
      'digits': {'dataset': 'digits', 'dataset_kwargs': {}, 'train_split': 'train[:85%]',
                 'val_split': 'train[85%:]', 'test_split': 'test'},
  })
  config.models = ml_collections.ConfigDict({
      'mlp32': _model({'name': 'mlp', 'widths': (32,)}, 3000, 3e-3),
      'mlp128': _model({'name': 'mlp', 'widths': (128,)}, 3000, 3e-3),
      'mlp256x2': _model({'name': 'mlp', 'widths': (256, 256)}, 8000, 1e-3),
      'mlp4': _model({'name': 'mlp', 'widths': (4,)}, 1500, 3e-3),
  })
  config.dataset_names = ('mnist1d_5k', 'mnist1d_20k', 'digits')
  config.dataset_models = ml_collections.ConfigDict({
      'mnist1d_5k': ('mlp32', 'mlp128', 'mlp256x2'),
      'mnist1d_20k': ('mlp32', 'mlp128', 'mlp256x2'),
      'digits': ('mlp4', 'mlp256x2'),
  })
  # (smaller, larger) training set for the growth claim; () skips that check.
  config.growth_datasets = ('mnist1d_5k', 'mnist1d_20k')
  config.seeds = 5                  # the checks' intervals: Student t over these seeds
  # The validation grid (the card's: k in 1..50, sigma in 0.01..1, plus T; None = uniform).
  config.tune = ml_collections.ConfigDict({
      'ks': (1, 2, 4, 8, 16, 32, 50), 'sigmas': (0.01, 0.03, 0.1, 0.3, 1.0, None),
      'temperatures': (0.5, 1.0, 2.0, 4.0)})
  config.knn = ml_collections.ConfigDict({'query_block': 256, 'db_block': 65536, 'mode': 'exact'})
  config.regression = ml_collections.ConfigDict({
      'dims': (2, 3, 5), 'sizes': (100, 1_000, 10_000, 100_000), 'noise': 0.1,
      'norm_fraction': 0.5, 'test_size': 5_000, 'k_exponent': 0.4, 'seeds': 3})
  # The checks, stated before any run (the only place their thresholds live). Each is decided by
  # the 95% Student-t interval of its per-seed values: holds when the whole interval satisfies it.
  config.checks = ml_collections.ConfigDict({
      'interpolation_threshold': 0.99,  # mean train accuracy from which a base "interpolates"
      'gain_min': 0.0,         # ResMem - base test accuracy > this, for a base that cannot fit
      'growth_min': 0.0,       # gain on the larger training set - gain on the smaller > this
      'no_gain_margin': 0.01,  # ResMem - base <= this, for a base that interpolates
      'risk_slope_max': 0.0,   # regression: ResMem's log-log slope of excess risk against n < this
      'flat_ratio': 1.5,       # regression: the base's max / min excess risk over n <= this
  })

  if variant == 'cpu':
    pass
  elif variant == 'tiny':
    config.dataset_names = ('digits',)
    config.growth_datasets = ()  # one training-set size: the growth claim is not checked
    config.models.mlp4.total_steps = 300
    config.models.mlp256x2.total_steps = 400
    config.seeds = 2
    config.tune.ks = (1, 4, 16)
    config.tune.sigmas = (0.1, None)
    config.tune.temperatures = (1.0, 2.0)
    config.regression.dims = (2,)
    config.regression.sizes = (100, 1_000, 10_000)
    config.regression.test_size = 1_000
    config.regression.seeds = 2
  elif variant == 'cifar100':
    name = 'cifar100'
    config.classifier = classifier_config.get_config('cifar10')
    config.datasets = ml_collections.ConfigDict({name: {
        'dataset': name, 'dataset_kwargs': {}, 'train_split': 'train[:95%]',
        'val_split': 'train[95%:]', 'test_split': 'test'}})
    config.models = ml_collections.ConfigDict({
        'resnet_w16': _model({'name': 'resnet', 'ndim': 2, 'width': 16, 'stage_sizes': (1, 1, 1),
                              'norm': 'batch'}, 30_000, 0.4),
        'resnet18': _model({'name': 'resnet', 'ndim': 2, 'width': 64,
                            'stage_sizes': (2, 2, 2, 2), 'norm': 'batch',
                            'stem_strides': 1}, 60_000, 0.4)})
    with config.classifier.unlocked():
      config.classifier.total_epochs = None
    config.dataset_names = (name,)
    config.dataset_models = ml_collections.ConfigDict({name: ('resnet_w16', 'resnet18')})
    config.growth_datasets = ()
    config.seeds = 1
    config.knn = ml_collections.ConfigDict({'query_block': 1024, 'db_block': 65536,
                                            'mode': 'approx'})
    config.regression.dims = ()
    # common.rehearsal: the small base only (the sweep shortened), 4 steps of batch 16 on 64
    # mock examples, k-NN grids cut to one value each; the real ResNet, mesh and sharded
    # database. Memory: ResNet-18's step at the classifier's real batch (512) and mesh.
    config.rehearsal = ml_collections.ConfigDict({
        'dataset': 'cifar100', 'mock_examples': 64,
        'overrides': ((f'dataset_models.{name}', ('resnet_w16',)),
                      ('models.resnet_w16.total_steps', 4), ('classifier.batch_size', 16),
                      ('tune.ks', (1, 4)), ('tune.sigmas', (None,)), ('tune.temperatures', (1.0,)),
                      ('classifier.optimizer.warmup_steps', 1),
                      ('classifier.eval_batch_size', 16)),
        'first_run': (),
        'memory': {'step': 'classifier', 'loop': 'classifier', 'model': 'models.resnet18.model',
                   'input_shape': (32, 32, 3), 'num_classes': 100},
    })
  else:
    raise ValueError(f'Unknown variant {variant!r}; use one of {VARIANTS}.')
  config.lock()
  return config

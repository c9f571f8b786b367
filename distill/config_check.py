"""The distill config checked from its fields alone, before anything runs (no data, no compile).

    config_check.check(config)     # or distill.experiment.check_config(config)

Every field of every dataset, regime, the eigenspace demo and the checks is inspected; a bad one
raises common.config_lib.ConfigError naming its dotted field and what was expected. What needs the
data (a train_size beyond its split, a dataset that does not load) the experiment finds by loading
every regime's data before the first regime trains.
"""

from __future__ import annotations

import ml_collections
import numpy as np

from common import config_lib
from common import models
from common import train as train_lib
from common.data import loader
from distill import deviations as dev_lib
from distill import loss as loss_lib

TOP_FIELDS = ('loop', 'data_dir', 'datasets', 'regimes', 'regime_names', 'deviation_regimes',
              'noise_seed', 'seeds', 'alpha', 'tau', 'switch_fraction', 'bins', 'eigenspace',
              'checks')
DATASET_FIELDS = ('dataset', 'dataset_kwargs', 'train_split', 'test_split', 'model', 'steps',
                  'learning_rate', 'augment')
REGIME_FIELDS = ('data', 'train_size', 'label_noise', 'student_length')
EIGENSPACE_FIELDS = ('n', 'd', 'decay', 'noise', 'test_size', 'seeds', 'eta_times_lambda_max',
                     'teacher_steps', 'student_steps')
CHECK_FIELDS = ('unsure_below', 'sure_from', 'sure_tolerance', 'min_points', 'excess_slope_above',
                'reference_slope_above', 'min_gain', 'recovery_fraction', 'mse_difference_below',
                'ratio_fraction', 'ratio_top_min', 'ratio_bottom_max')


def _fail(field: str, value, expected: str):
  raise config_lib.ConfigError(f'{field}={value!r}: expected {expected}.')


def _fields(section, field: str, names: tuple[str, ...], *, closed: bool = True) -> None:
  """`section` (a ConfigDict at dotted `field`) has the fields `names` (and no other when
  `closed`)."""
  if not isinstance(section, (ml_collections.ConfigDict, dict)):
    _fail(field, section, f'a section with fields {names}')
  for key in section if closed else ():
    if key not in names:
      raise config_lib.ConfigError(f'Unknown config field {field}.{key}'
                                   f'{config_lib.closest(key, names)}; {field} has {names}.')
  missing = [n for n in names if n not in section]
  if missing:
    raise config_lib.ConfigError(f'{field} has no field(s) {missing}; it needs {names}.')


def _whole(field: str, value, minimum: int) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    _fail(field, value, f'a whole number >= {minimum}')
  return int(value)


def _number(field: str, value, lo: float = -np.inf, hi: float = np.inf, *,
            lo_open: bool = False, hi_open: bool = False) -> float:
  """A finite number in the interval from lo to hi (open ends as asked)."""
  ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
  if ok:
    v = float(value)
    ok = (np.isfinite(v) and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi))
  if not ok:
    span = (f'{"(" if lo_open else "["}{lo:g}, {hi:g}{")" if hi_open else "]"}')
    _fail(field, value, 'a finite number' + ('' if np.isinf(lo) and np.isinf(hi) else
                                            f' in {span}'))
  return float(value)


def _names(field: str, value, known, known_field: str) -> tuple[str, ...]:
  names = tuple(value) if isinstance(value, (tuple, list)) else None
  if names is None or not all(isinstance(n, str) for n in names):
    _fail(field, value, f'a tuple of names from {known_field}')
  for name in names:
    if name not in known:
      raise config_lib.ConfigError(f'{field} names {name!r}, which is not in {known_field} '
                                   f'{tuple(known)}{config_lib.closest(name, known)}.')
  if len(set(names)) != len(names):
    _fail(field, value, 'each name once')
  return names


def _check_loop(loop) -> None:
  try:
    config_lib.check_loop(loop)
  except config_lib.ConfigError as e:  # the loop lives at config.loop
    raise config_lib.ConfigError(str(e).replace('config.', 'loop.', 1)) from e
  _whole('loop.seed', loop.seed, 0)
  opt = loop.optimizer
  name = opt.get('name', 'adam')
  if name not in train_lib.OPTIMIZERS:
    raise config_lib.ConfigError(f'loop.optimizer.name={name!r}: use one of {train_lib.OPTIMIZERS}'
                                 f'{config_lib.closest(str(name), train_lib.OPTIMIZERS)}.')
  if opt.get('schedule', 'constant') not in ('constant', 'cosine', 'linear'):
    _fail('loop.optimizer.schedule', opt.schedule, "'constant', 'cosine' or 'linear'")
  _whole('loop.optimizer.warmup_steps', opt.get('warmup_steps', 0), 0)
  _number('loop.optimizer.weight_decay', opt.get('weight_decay', 0.0) or 0.0, 0.0)
  _number('loop.optimizer.momentum', opt.get('momentum', 0.9), 0.0, 1.0, hi_open=True)
  if opt.get('grad_clip_norm') is not None:
    _number('loop.optimizer.grad_clip_norm', opt.grad_clip_norm, 0.0, lo_open=True)


def _check_model_axis(loop, seeds: int) -> None:
  """The teachers (seeds models) and students (3 x seeds) are common.ensemble runs: their models
  spread over the mesh's ensemble axis, which must exist and divide the seeds."""
  section = loop.get('ensemble')
  axis = section.get('model_axis', 'model') if section else 'model'
  try:
    axes = {name: size for name, size in loop.mesh}
  except (TypeError, ValueError) as e:
    raise config_lib.ConfigError(f'loop.mesh={loop.mesh!r}: expected ((axis name, size), ...).') \
        from e
  if axis not in axes:
    raise config_lib.ConfigError(
        f'loop.mesh={loop.mesh!r} has no {axis!r} axis: teachers and students train as '
        f'common.ensemble runs whose models spread over it; add ({axis!r}, 1).')
  size = axes[axis]
  if isinstance(size, int) and size > 1 and seeds % size:
    raise config_lib.ConfigError(
        f'seeds={seeds}: the {size}-way {axis!r} mesh axis (loop.mesh) needs a multiple of {size} '
        'models per ensemble run (seeds teachers, 3 x seeds students).')


def _check_dataset(name: str, ds) -> None:
  field = f'datasets.{name}'
  _fields(ds, field, DATASET_FIELDS)
  if not isinstance(ds.dataset, str) or not ds.dataset:
    _fail(f'{field}.dataset', ds.dataset, f'a dataset name (embedded: {loader.available()}, or a '
          'TFDS name)')
  for split in ('train_split', 'test_split'):
    value = ds[split]
    if not isinstance(value, str):
      _fail(f'{field}.{split}', value, 'a split such as "train" or "train[:90%]"')
    try:
      loader.parse_split(value)
    except loader.DatasetError as e:
      raise config_lib.ConfigError(f'{field}.{split}={value!r}: {e}') from e
  if ds.dataset_kwargs is not None and not isinstance(ds.dataset_kwargs,
                                                      (ml_collections.ConfigDict, dict)):
    _fail(f'{field}.dataset_kwargs', ds.dataset_kwargs, 'a dict of the dataset\'s options')
  _whole(f'{field}.steps', ds.steps, 1)
  _number(f'{field}.learning_rate', ds.learning_rate, 0.0, lo_open=True)
  try:
    models.build(ds.model, loader.NUM_CLASSES.get(ds.dataset, 2))
  except (config_lib.ConfigError, TypeError, AttributeError) as e:
    raise config_lib.ConfigError(f'{field}.model: {e}') from e
  augment = ds.augment
  if augment:
    if not isinstance(augment, (ml_collections.ConfigDict, dict)):
      _fail(f'{field}.augment', augment, 'a dict with max_shift, flip, noise')
    for key in augment:
      if key not in ('max_shift', 'flip', 'noise'):
        raise config_lib.ConfigError(f'Unknown config field {field}.augment.{key}'
                                     f'{config_lib.closest(key, ("max_shift", "flip", "noise"))}; '
                                     'use max_shift, flip, noise.')
    _whole(f'{field}.augment.max_shift', augment.get('max_shift', 0), 0)
    _number(f'{field}.augment.noise', augment.get('noise', 0.0), 0.0)
    if not isinstance(augment.get('flip', False), bool):
      _fail(f'{field}.augment.flip', augment.get('flip'), 'True or False')


def _check_regime(config, name: str, regime) -> None:
  field = f'regimes.{name}'
  _fields(regime, field, REGIME_FIELDS)
  if regime.data not in config.datasets:
    raise config_lib.ConfigError(f'{field}.data={regime.data!r} is not in datasets '
                                 f'{tuple(config.datasets)}'
                                 f'{config_lib.closest(str(regime.data), config.datasets)}.')
  _whole(f'{field}.train_size', regime.train_size, 0)  # 0: the whole split
  _number(f'{field}.label_noise', regime.label_noise, 0.0, 1.0)
  length = _number(f'{field}.student_length', regime.student_length, 0.0, lo_open=True)
  steps = config.datasets[regime.data].steps
  if int(round(steps * length)) < 1:
    _fail(f'{field}.student_length', regime.student_length,
          f'a length that gives the students at least one step (the teacher has {steps})')


def check(config: ml_collections.ConfigDict) -> None:
  """Every field of every regime, dataset and check, from the config alone (no data, no compile);
  a ConfigError names the dotted field. run() calls it first; what needs the data (a train_size
  larger than the split, a dataset that cannot load) is found by run() before any training."""
  _fields(config, 'config', TOP_FIELDS, closed=False)  # the platform may add its own fields
  _check_loop(config.loop)
  if config.data_dir is not None and not isinstance(config.data_dir, str):
    _fail('data_dir', config.data_dir, 'a directory (str) or None')
  for section in ('datasets', 'regimes'):
    if not isinstance(config[section], ml_collections.ConfigDict):
      _fail(section, config[section], 'a section of named entries')
  for name, ds in config.datasets.items():
    _check_dataset(name, ds)
  for name, regime in config.regimes.items():
    _check_regime(config, name, regime)
  _names('regime_names', config.regime_names, tuple(config.regimes), 'regimes')
  _names('deviation_regimes', config.deviation_regimes, tuple(config.regime_names),
         'regime_names')
  _whole('noise_seed', config.noise_seed, 0)
  # Two seeds at least: the checks take an interval over seeds, and each teacher's independent
  # reference is the teacher of another seed.
  _whole('seeds', config.seeds, 2)
  _check_model_axis(config.loop, config.seeds)
  for field, check in (('alpha', loss_lib.check_alpha), ('tau', loss_lib.check_tau)):
    try:
      check(config[field])
    except loss_lib.DistillError as e:
      raise config_lib.ConfigError(f'{field}={config[field]!r}: {e}') from e
  _number('switch_fraction', config.switch_fraction, 0.0, 1.0)
  try:
    dev_lib.check_bins(config.bins)
  except (loss_lib.DistillError, TypeError, ValueError) as e:
    raise config_lib.ConfigError(f'bins={config.bins!r}: {e}') from e

  ec = config.eigenspace
  _fields(ec, 'eigenspace', EIGENSPACE_FIELDS)
  for key, minimum in (('n', 1), ('d', 1), ('test_size', 1), ('seeds', 0), ('teacher_steps', 1),
                       ('student_steps', 1)):
    _whole(f'eigenspace.{key}', ec[key], minimum)
  if ec.seeds == 1:
    _fail('eigenspace.seeds', ec.seeds, '0 (no linear demo) or >= 2 (its check takes an interval '
          'over seeds)')
  _number('eigenspace.decay', ec.decay)
  _number('eigenspace.noise', ec.noise, 0.0)
  _number('eigenspace.eta_times_lambda_max', ec.eta_times_lambda_max, 0.0, 2.0, lo_open=True,
          hi_open=True)  # gradient descent converges for 0 < eta lambda_max < 2

  c = config.checks
  _fields(c, 'checks', CHECK_FIELDS)
  _number('checks.unsure_below', c.unsure_below, 0.0, 1.0, lo_open=True)
  _number('checks.sure_from', c.sure_from, 0.0, 1.0, hi_open=True)
  if c.sure_from < c.unsure_below:
    _fail('checks.sure_from', c.sure_from, f'>= checks.unsure_below ({c.unsure_below})')
  _number('checks.sure_tolerance', c.sure_tolerance, 0.0)
  _number('checks.excess_slope_above', c.excess_slope_above)
  _number('checks.reference_slope_above', c.reference_slope_above)
  _whole('checks.min_points', c.min_points, 0)
  _number('checks.min_gain', c.min_gain, 0.0)  # a gain must be > 0 to be recovered
  _number('checks.recovery_fraction', c.recovery_fraction, 0.0, 1.0)
  _number('checks.ratio_fraction', c.ratio_fraction, 0.0, 0.5, lo_open=True)
  _number('checks.ratio_top_min', c.ratio_top_min)
  _number('checks.ratio_bottom_max', c.ratio_bottom_max)
  _number('checks.mse_difference_below', c.mse_difference_below)

"""check_config: every field of every regime refused from the config alone, before any compute."""

import os

import pytest

from common import config_lib
from configs.distill import mnist1d as distill_config
from distill import experiment


@pytest.mark.parametrize('variant', distill_config.VARIANTS)
def test_every_variant_passes_check_config(variant):
  experiment.check_config(distill_config.get_config(variant))


BAD_FIELDS = [  # (dotted field, value, what the message must say)
    ('regimes.mnist1d_long.student_length', 0.0, r'regimes\.mnist1d_long\.student_length=0\.0'),
    ('regimes.mnist1d_long.student_length', 1e-5, 'at least one step'),
    ('regimes.mnist1d_long.label_noise', 1.5, r'regimes\.mnist1d_long\.label_noise=1\.5'),
    ('regimes.mnist1d_long.label_noise', -0.1, r'label_noise=-0\.1'),
    ('regimes.mnist1d_long.train_size', -5, r'regimes\.mnist1d_long\.train_size=-5'),
    ('regimes.mnist1d_long.data', 'mnist1', "did you mean 'mnist1d'"),
    ('datasets.mnist1d.learning_rate', -1e-2, r'datasets\.mnist1d\.learning_rate=-0\.01'),
    ('datasets.mnist1d.steps', 0, r'datasets\.mnist1d\.steps=0'),
    ('datasets.digits.model.name', 'mpl',
     r"datasets\.digits\.model: Unknown model 'mpl' \(did you mean 'mlp'"),
    ('datasets.digits.augment.max_shift', -1, r'datasets\.digits\.augment\.max_shift=-1'),
    ('datasets.digits.train_split', 'train[:9O%]', r'datasets\.digits\.train_split'),
    ('regime_names', ('mnist1d', 'digits', 'mnist1d_lnog'), "did you mean 'mnist1d_long'"),
    ('regime_names', ('digits', 'digits'), 'each name once'),
    ('deviation_regimes', ('mnist1d_small', 'cifar'), r'deviation_regimes names \'cifar\''),
    ('seeds', 1, r'seeds=1: expected a whole number >= 2'),
    ('eigenspace.seeds', 1, r'eigenspace\.seeds=1: expected 0 .* or >= 2'),
    ('checks.sure_from', 0.3, r'checks\.sure_from=0\.3: expected >= checks\.unsure_below'),
    ('checks.reference_slope_above', float('nan'), r'checks\.reference_slope_above=nan'),
    ('noise_seed', -1, 'noise_seed=-1'),
    ('alpha', 1.5, r'alpha=1\.5: alpha must'),
    ('tau', 0.0, r'tau=0\.0: tau must'),
    ('switch_fraction', 1.5, r'switch_fraction=1\.5'),
    ('bins', (0.0, 0.6, 0.4, 1.0), 'bins=.*increasing'),
    ('eigenspace.eta_times_lambda_max', 2.0, r'eigenspace\.eta_times_lambda_max=2\.0'),
    ('eigenspace.teacher_steps', 0, r'eigenspace\.teacher_steps=0'),
    ('eigenspace.n', 0, r'eigenspace\.n=0'),
    ('eigenspace.noise', -0.5, r'eigenspace\.noise=-0\.5'),
    ('checks.min_points', -1, r'checks\.min_points=-1'),
    ('checks.recovery_fraction', 2.0, r'checks\.recovery_fraction=2\.0'),
    ('checks.ratio_fraction', 0.0, r'checks\.ratio_fraction=0\.0'),
    ('checks.min_gain', -0.01, r'checks\.min_gain=-0\.01'),
    ('loop.batch_size', 0, r'loop\.batch_size=0'),
    ('loop.optimizer.name', 'adma', "loop.optimizer.name='adma'.*did you mean 'adam'"),
    # Teachers and students are common.ensemble runs: their models need the mesh's model axis.
    ('loop.mesh', (('data', -1),), r"loop\.mesh=.* has no 'model' axis"),
    ('loop.mesh', (('data', 1), ('model', 3)), r'seeds=8: the 3-way .model. mesh axis'),
]


@pytest.mark.parametrize('field,value,match', BAD_FIELDS)
def test_a_bad_field_is_named_by_check_config(field, value, match):
  config = distill_config.get_config('cpu')
  with config.unlocked():
    config_lib.set_fields(config, **{field: value})
  with pytest.raises(config_lib.ConfigError, match=match):
    experiment.check_config(config)


def test_an_unknown_field_in_a_regime_is_refused():
  config = distill_config.get_config('cpu')
  with config.unlocked():
    config.regimes.mnist1d_long.student_lenght = 2.0
  with pytest.raises(config_lib.ConfigError, match=r"regimes\.mnist1d_long\.student_lenght.*"
                                                   "did you mean 'student_length'"):
    experiment.check_config(config)


def test_a_bad_field_in_the_last_regime_stops_run_before_the_first_regime_trains(tmp_path):
  config = distill_config.get_config('cpu')
  config.regimes.mnist1d_short.student_length = 0.0  # the last regime of six
  with pytest.raises(config_lib.ConfigError, match=r'regimes\.mnist1d_short\.student_length'):
    experiment.run(config, str(tmp_path))
  assert not os.listdir(tmp_path)  # nothing trained, nothing written


def test_a_train_size_beyond_the_last_regimes_data_stops_run_before_training(tmp_path):
  config = distill_config.get_config('tiny')
  with config.unlocked():
    config.regimes.digits_big = config.regimes.digits.copy_and_resolve_references()
  config.regimes.digits_big.train_size = 5000  # digits has 1,497 training examples
  config.regime_names = ('digits', 'digits_big')
  with pytest.raises(config_lib.ConfigError, match=r'regimes\.digits_big\.train_size=5000 '
                                                   'exceeds the 1497'):
    experiment.run(config, str(tmp_path))
  assert not os.listdir(tmp_path)

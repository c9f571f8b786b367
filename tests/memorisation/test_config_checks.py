"""memorisation.experiment.check_config: every impossible or misleading field is refused before any
data is loaded or anything compiled, with the dotted field in the message."""

import os

import pytest

from common import config_lib
from configs.memorisation import sweep
from memorisation import experiment


def _config(variant='tiny', **dotted):
  config = sweep.get_config(variant)
  with config.unlocked():
    config_lib.set_fields(config, **dotted)
  return config


def _refused(match, variant='tiny', **dotted):
  with pytest.raises(config_lib.ConfigError, match=match):
    experiment.check_config(_config(variant, **dotted))


@pytest.mark.parametrize('variant', sweep.VARIANTS)
def test_every_variant_passes_check_config(variant):
  experiment.check_config(sweep.get_config(variant))


# The reliability trial: `--config.distill.alpha=1.5` trained one-hot students, reported them as
# distillation and exited 0.
def test_alpha_above_one_stops_the_cpu_variant_before_compute():
  config = sweep.get_config('cpu')
  config.distill.alpha = 1.5       # what --config.distill.alpha=1.5 sets on the locked config
  with pytest.raises(config_lib.ConfigError, match=r'distill\.alpha=1\.5: expected a number in '
                                                   r'\[0, 1\)'):
    experiment.check_config(config)


def test_run_checks_the_config_before_it_creates_the_workdir(tmp_path):
  config = sweep.get_config('tiny')
  config.distill.alpha = 1.5
  with pytest.raises(config_lib.ConfigError, match=r'distill\.alpha'):
    experiment.run(config, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run')


def test_negative_alpha_is_refused():
  _refused(r'distill\.alpha=-0\.1', **{'distill.alpha': -0.1})


def test_alpha_one_is_refused_when_students_are_distilled():
  # alpha = 1 leaves no soft-label term: the "distilled" students would be one-hot models.
  _refused(r'distill\.alpha=1\.0', **{'distill.alpha': 1.0})


def test_alpha_one_is_accepted_without_distillation():
  experiment.check_config(_config(**{'distill.alpha': 1.0, 'distill.datasets': ()}))


@pytest.mark.parametrize('tau', [0.0, -1.0, float('nan'), float('inf')])
def test_temperature_must_be_positive_and_finite(tau):
  _refused(r'distill\.tau=', **{'distill.tau': tau})


def test_student_size_outside_the_sweep_is_refused():
  # Was a raw IndexError after the whole sweep had trained.
  _refused(r'distill\.student_sizes=\(7,\): expected an index into datasets\.digits\.sizes',
           **{'distill.student_sizes': (7,)})


def test_teacher_size_outside_the_sweep_is_refused():
  _refused(r'distill\.teacher_size=3', **{'distill.teacher_size': 3})


def test_no_student_sizes_with_distillation_on_is_refused():
  _refused(r'distill\.student_sizes=\(\): expected at least one index',
           **{'distill.student_sizes': ()})


def test_the_same_student_size_twice_is_refused():
  _refused(r'distill\.student_sizes=\(1, -2\): expected each size once',
           **{'distill.student_sizes': (1, -2)})


def test_distillation_on_a_dataset_not_in_the_run_is_refused():
  _refused(r"distill\.datasets=\('mnist1d',\)", **{'distill.datasets': ('mnist1d',)})


def test_zero_batch_size_names_the_loop_section():
  # Was a raw OverflowError.
  _refused(r'^datasets\.digits\.loop\.batch_size=0: expected a whole number >= 1',
           **{'datasets.digits.loop.batch_size': 0})


@pytest.mark.parametrize('field,value', [
    ('total_epochs', 0.0), ('total_epochs', -1.0), ('log_every_steps', 0),
    ('checkpoint_every_steps', 0), ('keep_checkpoints', 0), ('seed', -1),
    ('optimizer.learning_rate', -1e-2), ('optimizer.learning_rate', 0.0)])
def test_impossible_loop_values_name_the_loop_section(field, value):
  _refused(rf'^datasets\.digits\.loop\.{field}=', **{f'datasets.digits.loop.{field}': value})


def test_loop_total_steps_is_refused_because_the_sweep_counts_epochs():
  _refused(r'datasets\.digits\.loop\.total_steps=100: expected None',
           **{'datasets.digits.loop.total_steps': 100})


def test_a_mesh_without_a_model_axis_is_refused():
  _refused(r'datasets\.digits\.loop\.mesh=', **{'datasets.digits.loop.mesh': (('data', -1),)})


def test_unknown_dataset_name_is_refused_with_a_suggestion():
  _refused(r"dataset_names=\('digitz',\).*did you mean 'digits'",
           **{'dataset_names': ('digitz',)})


def test_empty_or_repeated_dataset_names_are_refused():
  _refused(r'dataset_names=\(\)', **{'dataset_names': ()})
  _refused(r'each dataset once', **{'dataset_names': ('digits', 'digits')})


@pytest.mark.parametrize('field,value', [('num_models', 1), ('num_models', 0),
                                         ('num_full_models', 0), ('mask_seed', -1),
                                         ('chunk_target', -1)])
def test_impossible_counts_are_refused(field, value):
  _refused(rf'^{field}={value}: expected a whole number', **{field: value})


@pytest.mark.parametrize('fraction', [0.0, 1.0, 1.5, -0.3])
def test_subset_fraction_outside_zero_one_is_refused(fraction):
  _refused(rf'^fraction={fraction}: expected a number in \(0, 1\)', fraction=fraction)


def test_unknown_prng_implementation_is_refused():
  _refused(r"prng_impl='threefy'", prng_impl='threefy')


@pytest.mark.parametrize('noise', [1.0, 1.5, -0.1])
def test_label_noise_outside_zero_one_is_refused(noise):
  _refused(rf'datasets\.digits\.label_noise={noise}', **{'datasets.digits.label_noise': noise})


def test_unknown_model_or_size_field_is_refused():
  _refused(r"datasets\.digits\.model\.name='mlpp'", **{'datasets.digits.model.name': 'mlpp'})
  _refused(r"datasets\.digits\.size_field='width'.*did you mean 'widths'",
           **{'datasets.digits.size_field': 'width'})


def test_sizes_out_of_order_are_refused():
  # The classes read sizes smallest -> largest: reversed, increasing and decreasing would swap.
  _refused(r'datasets\.digits\.sizes=.*smallest to largest',
           **{'datasets.digits.sizes': ((64,), (16,), (4,))})


def test_a_single_size_or_an_empty_width_is_refused():
  _refused(r'at least two sizes', **{'datasets.digits.sizes': ((4,),)})
  _refused(r'datasets\.digits\.sizes\[1\]=\(0,\)', **{'datasets.digits.sizes': ((4,), (0,))})


def test_bad_image_shape_is_refused():
  _refused(r'datasets\.digits\.image_shape=\(8, 0\)', **{'datasets.digits.image_shape': (8, 0)})


@pytest.mark.parametrize('field', ['holdout_epochs', 'holdout_learning_rate'])
def test_holdout_retraining_needs_positive_values(field):
  _refused(rf'datasets\.digits\.{field}=0\.0', **{f'datasets.digits.{field}': 0.0})


@pytest.mark.parametrize('field,value', [('z', -1.0), ('floor', -0.1), ('bootstrap', 0),
                                         ('model_bootstrap', 1), ('null_draws', 1),
                                         ('proxy_bootstrap', 0)])
def test_trajectory_settings_are_checked_before_training(field, value):
  # Were found by trajectories.tolerance / the bootstrap after every size had trained.
  _refused(rf'^trajectory\.{field}=', **{f'trajectory.{field}': value})


@pytest.mark.parametrize('field,value', [('class_null_quantile', 1.0),
                                         ('decreasing_minus_increasing', 1.5),
                                         ('distill_mem_change', -2.0),
                                         ('mislabelled_increasing', -0.1),
                                         ('fixed_size_corr', 2.0), ('trend_ratio', -1.0),
                                         ('distill_accuracy_margin', 3.0)])
def test_check_thresholds_outside_their_range_are_refused(field, value):
  _refused(rf'^checks\.{field}=', **{f'checks.{field}': value})


"""Bad input stops with a message that names the problem, before any compute."""

import pytest

from common import checkpoint as ckpt_lib
from common import classifier
from common import config_lib
from common import mesh as mesh_lib
from common.data import loader
from common.data import pipeline
from tests.common.conftest import run_cli
from tests.common.conftest import tiny_config


def test_unknown_config_field_on_the_command_line_suggests_the_closest(tmp_path):
  out = run_cli(str(tmp_path), '--config.optimizer.learnig_rate=0.1')
  assert out.returncode != 0
  assert 'Did you mean "learning_rate"' in out.stderr
  assert not (tmp_path / 'checkpoints').exists()


def test_unknown_config_field_in_code_suggests_the_closest():
  config = tiny_config()
  with pytest.raises(AttributeError, match='Did you mean "batch_size"'):
    config.batch_sise = 3  # configs are locked
  reference = tiny_config()
  with config.unlocked():
    config.eval_every_step = 3
  with pytest.raises(config_lib.ConfigError, match="did you mean 'eval_every_steps'"):
    config_lib.check_fields(config, reference)


def test_unknown_dataset_lists_the_available_ones(tmp_path):
  with pytest.raises(loader.DatasetError, match=r"did you mean 'mnist1d'.*digits"):
    classifier.run(tiny_config(dataset='mnist1e'), str(tmp_path))


def test_tfds_dataset_that_is_not_prepared(tmp_path):
  with pytest.raises(loader.DatasetError, match='not prepared'):
    loader.load('cifar10', 'train', data_dir=str(tmp_path))


def test_batch_that_does_not_divide_over_the_data_axis(tmp_path):
  config = tiny_config(batch_size=60)  # 8-way data axis
  with pytest.raises(config_lib.ConfigError, match='batch_size=60 does not divide over the 8-way'):
    classifier.train_classifier(config, str(tmp_path))
  assert not (tmp_path / 'checkpoints').exists()


def test_mesh_that_does_not_match_the_devices(tmp_path):
  with pytest.raises(config_lib.ConfigError, match=r'has 6 devices but 8 are in use'):
    classifier.train_classifier(tiny_config(mesh=(('data', 2), ('model', 3))), str(tmp_path))
  with pytest.raises(config_lib.ConfigError, match='does not fit 8 devices'):
    mesh_lib.make_mesh((('data', -1), ('model', 3)))
  with pytest.raises(config_lib.ConfigError, match='num_devices=16 but 8 devices'):
    mesh_lib.select_devices(16)


def test_workdir_with_a_checkpoint_of_a_different_model(tmp_path):
  classifier.train_classifier(tiny_config(eval_splits=()), str(tmp_path))
  other = tiny_config(eval_splits=(), **{'model.widths': (48,)})
  with pytest.raises(ckpt_lib.CheckpointMismatchError,
                     match=r"different model:\n  .params\['hidden_0'\]\['bias'\]"):
    classifier.train_classifier(other, str(tmp_path))


def test_unknown_model_optimizer_and_strategy(tmp_path):
  with pytest.raises(config_lib.ConfigError, match="Unknown model 'mpl'.*did you mean 'mlp'"):
    classifier.train_classifier(tiny_config(**{'model.name': 'mpl'}), str(tmp_path / 'a'))
  with pytest.raises(config_lib.ConfigError, match="no field 'widht'"):
    config = tiny_config()
    with config.model.unlocked():
      config.model.widht = 3
    classifier.train_classifier(config, str(tmp_path / 'b'))
  with pytest.raises(config_lib.ConfigError, match="Unknown optimizer 'adan'"):
    classifier.train_classifier(tiny_config(**{'optimizer.name': 'adan'}), str(tmp_path / 'c'))
  with pytest.raises(config_lib.ConfigError, match="Unknown sharding strategy 'fdsp'"):
    classifier.train_classifier(tiny_config(sharding='fdsp'), str(tmp_path / 'd'))


def test_resuming_with_another_batch_size_is_refused():
  iterator = pipeline.BatchIterator(loader.load('digits', 'train'), 64)
  with pytest.raises(config_lib.ConfigError, match='batch size 32'):
    iterator.set_state({'position': 3, 'global_batch_size': 32})


def test_bad_splits():
  with pytest.raises(loader.DatasetError, match='Cannot parse split'):
    loader.load('digits', 'train[:x]')
  with pytest.raises(loader.DatasetError, match='"train" and "test"'):
    loader.load('digits', 'validation')


@pytest.mark.parametrize('field,value,expected', [
    ('eval_batch_size', 0, r'config\.eval_batch_size=0: expected a whole number >= 1'),
    ('optimizer.learning_rate', -0.01, r'config\.optimizer\.learning_rate=-0\.01: expected a '
                                       r'finite number > 0'),
    ('optimizer.learning_rate', 0.0, r'learning_rate=0\.0'),
    ('optimizer.learning_rate', float('nan'), r'learning_rate=nan'),
    ('optimizer.learning_rate', float('inf'), r'learning_rate=inf'),
])
def test_eval_batch_and_learning_rate_that_cannot_train_stop_before_compute(
    tmp_path, field, value, expected):
  config = tiny_config(**{field: value})
  with pytest.raises(config_lib.ConfigError, match=expected):
    classifier.check_config(config)
  with pytest.raises(config_lib.ConfigError, match=expected):
    classifier.run(config, str(tmp_path))
  with pytest.raises(config_lib.ConfigError, match=expected):  # the papers' path too
    classifier.train_classifier(config, str(tmp_path))
  assert not (tmp_path / 'checkpoints').exists()


def test_loop_errors_name_the_section_they_are_in():
  with pytest.raises(config_lib.ConfigError, match=r'finetune\.batch_size=0'):
    config_lib.check_loop(tiny_config(batch_size=0), section='finetune')


@pytest.mark.parametrize('field,value,expected', [
    ('input', 'disk', "config.input='disk'"),
    ('total_steps', None, 'both unset'),
    ('eval_splits', (('test',),), 'eval_splits entry'),
    ('model.name', 'resnte', "did you mean 'resnet'"),
    ('optimizer.name', 'adma', "did you mean 'adam'"),
    ('sharding', 'fdsp', "did you mean 'fsdp'"),
])
def test_classifier_check_config_reads_only_the_config(field, value, expected):
  with pytest.raises(config_lib.ConfigError, match=expected):
    classifier.check_config(tiny_config(**{field: value}))


def test_every_classifier_variant_passes_its_check():
  from configs.common import classifier as classifier_config  # pylint: disable=g-import-not-at-top
  for variant in classifier_config.VARIANTS:
    classifier.check_config(classifier_config.get_config(variant))

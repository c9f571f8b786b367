"""check_config of both resmem experiments: every variant passes; a bad field is named before any
data is read or anything compiles (run calls it first)."""

import os

import pytest

from common import config_lib
from configs.resmem import lm as lm_config
from configs.resmem import mnist1d as mnist1d_config
from resmem import experiment
from resmem import lm_experiment


@pytest.mark.parametrize('variant', mnist1d_config.VARIANTS)
def test_every_classification_variant_passes(variant):
  experiment.check_config(mnist1d_config.get_config(variant))


@pytest.mark.parametrize('variant', lm_config.VARIANTS)
def test_every_lm_variant_passes_and_has_no_cache_switch(variant):
  config = lm_config.get_config(variant)
  lm_experiment.check_config(config)
  assert 'compilation_cache' not in config  # common.app opens the one cache


@pytest.mark.parametrize('field,value,message', [
    ('seeds', 0, r'seeds=0: expected a whole number >= 1'),
    ('tune.ks', (0, 4), r'tune\.ks\[0\]=0'),
    ('tune.sigmas', (-0.1, None), r'tune\.sigmas\[0\]=-0\.1: .*\(or None: uniform weights\)'),
    ('tune.temperatures', (0.0,), r'tune\.temperatures\[0\]=0\.0'),
    ('knn.mode', 'fast', r"knn\.mode='fast'"),
    ('knn.db_block', 0, r'knn\.db_block=0'),
    ('models.mlp4.learning_rate', -1e-3, r'models\.mlp4\.learning_rate=-0\.001'),
    ('models.mlp4.total_steps', 0, r'models\.mlp4\.total_steps=0'),
    ('models.mlp4.model.name', 'mlpp', r'models\.mlp4 \(with classifier, on datasets\.digits\)'),
    ('classifier.batch_size', 0, r'classifier\.batch_size=0'),
    ('classifier.eval_batch_size', 0, r'classifier\.eval_batch_size=0'),
    ('growth_datasets', ('digits',), r'growth_datasets=\(\'digits\',\)'),
    ('growth_datasets', ('digits', 'mnist1d'), r'growth_datasets names \'mnist1d\''),
    ('dataset_names', ('digitz',), r"dataset_names names 'digitz', which is not in datasets"),
    ('regression.sizes', (1000, 100), r'regression\.sizes=\(1000, 100\)'),
    ('regression.k_exponent', 1.5, r'regression\.k_exponent=1\.5'),
    ('checks.interpolation_threshold', 1.5, r'checks\.interpolation_threshold=1\.5'),
    ('checks.no_gain_margin', -0.1, r'checks\.no_gain_margin=-0\.1'),
    ('checks.flat_ratio', 0.5, r'checks\.flat_ratio=0\.5: expected a finite number >= 1'),
])
def test_a_bad_classification_field_is_named(field, value, message):
  config = config_lib.set_fields(mnist1d_config.get_config('tiny'), **{field: value})
  with pytest.raises(config_lib.ConfigError, match=message):
    experiment.check_config(config)


@pytest.mark.parametrize('field,value,message', [
    ('context', 0, r'context=0: expected a whole number >= 1'),
    ('val_tokens', 8, r'val_tokens=8: expected a whole number >= 16'),
    ('forward_batch', 0, r'forward_batch=0'),
    ('models.small.d_model', 15, r'models\.small\.d_model=15 is not a multiple of '
                                 r'models\.small\.num_heads=2'),
    ('models.small.learning_rate', -3e-3, r'models\.small\.learning_rate=-0\.003'),
    ('models.large.total_steps', 0, r'models\.large\.total_steps=0'),
    ('loop.batch_size', 0, r'loop\.batch_size=0'),
    ('loop.optimizer.name', 'adamx', r"loop\.optimizer\.name: Unknown optimizer 'adamx'"),
    ('tune.lambdas', (0.3, 1.5), r'tune\.lambdas\[1\]=1\.5'),
    ('tune.ks', (1, 5000), r'k=5000 exceeds the memory of at most 4992 keys'),
    ('floor', 0.0, r'floor=0\.0: expected a finite number in \(0, 1\]'),
    ('knn.mode', 'fast', r"knn\.mode='fast'"),
    ('checks.larger', 'small', r'checks\.underfit and checks\.larger are both \'small\''),
    ('checks.underfit', 'medium', r"checks\.underfit='medium' is not in model_names"),
    ('checks.se_multiple', 0.0, r'checks\.se_multiple=0\.0: expected a finite number > 0'),
    ('model_names', ('small', 'huge'), r"model_names names 'huge', which is not in models"),
    ('train_input', 'disk', r"train_input='disk'"),
])
def test_a_bad_lm_field_is_named(field, value, message):
  config = config_lib.set_fields(lm_config.get_config('tiny'), **{field: value})
  with pytest.raises(config_lib.ConfigError, match=message):
    lm_experiment.check_config(config)


def test_an_unknown_knn_option_is_named():
  config = lm_config.get_config('tiny')
  with config.unlocked():
    config.knn.axis = 'data'  # the memory's own field, not a kernel option here
  with pytest.raises(config_lib.ConfigError, match=r'knn\.axis: not a k-NN option'):
    lm_experiment.check_config(config)


@pytest.mark.parametrize('module,get_config,field', [
    (experiment, mnist1d_config.get_config, 'seeds'),
    (lm_experiment, lm_config.get_config, 'forward_batch'),
])
def test_run_checks_the_config_before_anything_else(tmp_path, module, get_config, field):
  config = config_lib.set_fields(get_config('tiny'), **{field: 0})
  workdir = str(tmp_path / 'run')
  with pytest.raises(config_lib.ConfigError, match=f'{field}=0'):
    module.run(config, workdir)
  assert not os.path.exists(workdir)  # nothing created, nothing loaded

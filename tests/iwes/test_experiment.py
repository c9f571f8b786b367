"""iwes's experiment end to end on the tiny config, and every config variant built and checked."""

import importlib
import json

import jax
import jax.numpy as jnp
import pytest

from common import config_lib
from common import models
from common import report
from common.data import loader
from configs.common import loop as loop_config
from configs.iwes import mnist1d as iwes_config
from iwes import checks
from iwes import experiment

POOL_SIZES = {'mnist1d': lambda n: int(0.8 * n), 'digits': lambda n: 1497,
              'cifar10': lambda n: 50_000, 'cifar100': lambda n: 50_000}


def test_tiny_config_runs_end_to_end(tmp_path):
  config = iwes_config.get_config('tiny')
  config.datasets.digits.loop.num_devices = 1
  summary = experiment.run(config, str(tmp_path))
  numbers = summary['numbers']
  checks_ = {c['name']: c for c in summary['checks']}
  assert all({'value', 'threshold', 'holds'} <= set(c) for c in checks_.values())
  assert summary['reproduced'] == report.verdict_from(summary['checks'])
  assert 'digits/iwes_dis_w5_minus_uniform' in checks_
  assert 'digits/iwes_dis_w5_minus_best_top_k' in checks_
  assert 'digits/iwes_dis_w5_acceptance_last_minus_first' in checks_
  assert summary['tables'] and len(summary['tables'][0]['rows']) == len(config.method_names)
  rows = numbers['digits']['methods']
  assert set(rows) == set(config.method_names)
  ds = config.datasets.digits
  for row in rows.values():
    assert row['labels'] == list(range(ds.seed_size, ds.budget + 1, ds.batch_size))
    assert all(0.0 <= a <= 1.0 for a in row['accuracy'])
  iwes_row = rows['iwes_dis_w5']
  assert len(iwes_row['acceptance_rate']) == 2
  assert all(0 < a <= 1 for a in iwes_row['acceptance_rate'])
  assert all(1 <= w <= 5.0 for w in iwes_row['weight_max'])
  for fig in summary['figures']:
    assert (tmp_path / fig).exists()
  assert json.load(open(tmp_path / 'summary.json'))['claim'] == experiment.CLAIM
  # a rerun resumes from the saved selections: same numbers
  again = experiment.run(config, str(tmp_path))
  assert again['numbers']['digits']['methods'] == rows


@pytest.mark.parametrize('variant', iwes_config.VARIANTS)
def test_config_variants_build_and_check(variant):
  config = iwes_config.get_config(variant)
  assert config.is_locked
  experiment.check_config(config)
  runs = experiment.make_runs(config)   # every method builds (Method checks its fields)
  assert len(runs) == len(config.method_names) * config.seeds
  for name in config.method_names:
    assert name in config.methods
  for name in config.dataset_names:
    ds = config.datasets[name]
    config_lib.check_fields(ds.loop, loop_config.get_config())
    config_lib.check_loop(ds.loop)
    assert ds.loop.batch_size <= ds.seed_size
    n = ds.dataset_kwargs.get('num_samples', 0)
    checks.check_sizes(POOL_SIZES[ds.dataset](n), ds.seed_size, ds.batch_size, ds.budget)
    model = models.build(ds.model, loader.NUM_CLASSES[ds.dataset])
    shape = loader.INPUT_SHAPES[ds.dataset]
    out = jax.eval_shape(lambda m=model: m.init(jax.random.key(0), jnp.zeros((2,) + shape),
                                                train=False))
    assert jax.tree.leaves(out)
  for key in ('primary', 'primary_noweight', 'active'):
    assert config[key] in config.methods


def test_unknown_variant_and_method_names():
  with pytest.raises(ValueError, match='use one of'):
    iwes_config.get_config('gpu')
  config = iwes_config.get_config('tiny')
  config.method_names = ('uniform', 'coreset')
  with pytest.raises(checks.IwesInputError, match='coreset'):
    experiment.make_runs(config)


def _with(variant='tiny', **fields):
  config = iwes_config.get_config(variant)
  with config.unlocked():
    return config_lib.set_fields(config, **fields)


@pytest.mark.parametrize('fields, match', [
    ({'datasets.digits.batch_size': 0}, r'datasets\.digits\.batch_size=0: expected a whole'),
    ({'datasets.digits.budget': 100}, r'datasets\.digits\.budget - datasets\.digits\.seed_size '
                                      r'= 36 is not a whole number of batches'),
    ({'datasets.digits.seed_size': 200}, r'datasets\.digits\.seed_size=200 is larger than '
                                         r'datasets\.digits\.budget=128'),
    ({'datasets.digits.loop.batch_size': 96}, r'datasets\.digits\.loop\.batch_size=96 is larger '
                                              r'than datasets\.digits\.seed_size=64'),
    ({'datasets.digits.loop.optimizer.learning_rate': -1.0},
     r'datasets\.digits\.loop\.optimizer\.learning_rate=-1\.0'),
    ({'datasets.digits.model.name': 'mlpp'}, r"datasets\.digits\.model: Unknown model 'mlpp'"),
    ({'methods.iwes_dis_w5.w_max': 0.5}, r'methods\.iwes_dis_w5: .*w_max=0\.5'),
    ({'method_names': ('uniform', 'coreset')}, r"method_names: \['coreset'\] not in methods"),
    ({'primary': 'iwes_dis_w7'}, r"primary: \['iwes_dis_w7'\] not in methods"),
    ({'seeds': 0}, r'seeds=0: expected a whole number >= 1'),
    ({'chunk_size': -1}, r'chunk_size=-1: expected a whole number >= 0'),
    ({'checks.final_points': 4}, r'checks\.final_points=4: more than the 3 budgets'),
    ({'checks.beats_margin': float('nan')}, r'checks\.beats_margin=nan: expected a finite'),
    ({'dataset_names': ('digits', 'svhn')}, r"dataset_names: 'svhn' is not in datasets"),
])
def test_check_config_names_the_bad_field_before_anything_runs(tmp_path, fields, match):
  config = _with(**fields)
  with pytest.raises(config_lib.ConfigError, match=match):
    experiment.check_config(config)
  with pytest.raises(config_lib.ConfigError, match=match):  # run checks first: nothing written
    experiment.run(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()


def test_the_compile_cache_switch_is_gone():
  assert 'compile_cache' not in iwes_config.get_config('cpu')
  assert not hasattr(experiment, 'compile_cache')

"""iwes's experiment end to end on the tiny config, and every config variant built and checked."""

import importlib
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common import config_lib
from common import models
from common import report
from common.data import loader
from configs.common import loop as loop_config
from configs.iwes import mnist1d as iwes_config
from iwes import checks
from iwes import experiment

TRAIN_SIZES = {'mnist1d': lambda n: int(0.8 * n), 'digits': lambda n: 1497,
               'cifar10': lambda n: 50_000, 'cifar100': lambda n: 50_000}


def test_tiny_config_runs_end_to_end(tmp_path):
  config = iwes_config.get_config('tiny')
  config.datasets.digits.loop.num_devices = 1
  summary = experiment.run(config, str(tmp_path))
  numbers = summary['numbers']
  checks_ = {c['name']: c for c in summary['checks']}
  # the new forms (issue 27): every check has a state and an explicit comparison, and none of
  # the deciding ones rests on a single value: each is a per-seed paired difference with an
  # interval over the config's seeds.
  assert all(c['state'] in ('holds', 'fails', 'inconclusive') and c['compare']
             for c in checks_.values())
  assert all(c['evidence'] == 'interval' and c['interval'] for c in checks_.values())
  assert summary['verdict'] == report.verdict(summary['checks'])
  assert set(checks_) == {'digits/iwes_minus_uniform', 'digits/iwes_minus_best_top_k',
                          'digits/iwes_acceptance_last_minus_first_round',
                          'digits/iwes_minus_iwes_dis_noweight'}
  assert checks_['digits/iwes_minus_iwes_dis_noweight']['informational']
  assert 'numbers' in summary and 'checks' not in numbers
  titles = [t['title'] for t in summary['tables']]
  assert len(summary['tables'][0]['rows']) == len(config.method_names)
  caps = next(t for t in summary['tables']
              if t['title'].startswith('Diagnosis: IWeS-dis at every weight cap'))
  assert [r[1] for r in caps['rows']] == ['iwes_dis_w5', 'iwes_dis_w20', 'iwes_dis_noweight']
  diagnosis = next(t for t in summary['tables']
                   if t['title'].startswith('Diagnosis: what the importance weights do'))
  assert len(diagnosis['rows']) >= 3 and 'set ESS / n' in diagnosis['columns'], titles
  chosen = numbers['digits']['iwes']
  assert chosen == experiment.best_on_validation(numbers['digits']['methods'],
                                                 config.iwes_candidates, 2)
  rows = numbers['digits']['methods']
  assert set(rows) == set(config.method_names)
  ds = config.datasets.digits
  for row in rows.values():
    assert row['labels'] == list(range(ds.seed_size, ds.budget + 1, ds.batch_size))
    assert all(0.0 <= a <= 1.0 for a in row['accuracy'])
  iwes_row = rows['iwes_dis_w5']
  assert len(iwes_row['acceptance_rate']) == 2
  assert numbers['digits']['valid'] == 300
  assert all(len(v) == 3 for v in iwes_row['valid_per_seed'])      # every budget, validation too
  for key in ('set_ess_fraction', 'loss_variance_factor', 'batch_ess_fraction', 'agreement'):
    assert np.shape(iwes_row['rounds'][key]) == (config.seeds, 2), key
  assert np.all(np.asarray(iwes_row['rounds']['set_ess_fraction'])[:, 0] == 1.0)  # seed set
  assert np.all(np.asarray(rows['iwes_dis_noweight']['ess_fraction_per_seed']) == 1.0)
  assert all(0 < a <= 1 for a in iwes_row['acceptance_rate'])
  assert np.all((np.asarray(iwes_row['rounds']['weight_max']) >= 1)
                & (np.asarray(iwes_row['rounds']['weight_max']) <= 5.0))
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
    valid = int(ds.valid_split.split('[-')[1].rstrip(':]'))
    checks.check_sizes(TRAIN_SIZES[ds.dataset](n) - valid, ds.seed_size, ds.batch_size,
                       ds.budget)
    model = models.build(ds.model, loader.NUM_CLASSES[ds.dataset])
    shape = loader.INPUT_SHAPES[ds.dataset]
    out = jax.eval_shape(lambda m=model: m.init(jax.random.key(0), jnp.zeros((2,) + shape),
                                                train=False))
    assert jax.tree.leaves(out)
  for key in ('primary_noweight', 'active'):
    assert config[key] in config.methods
  assert set(config.iwes_candidates) <= set(config.methods)


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
    ({'iwes_candidates': ('iwes_dis_w7',)},
     r"iwes_candidates: \['iwes_dis_w7'\] not in methods"),
    ({'iwes_candidates': ('iwes_dis_w2',)}, r'none is in method_names'),
    ({'iwes_candidates': ()}, r'iwes_candidates=\(\): name at least one'),
    ({'datasets.digits.valid_split': ''}, r'datasets\.digits\.valid_split=\'\': expected a '
                                          r'split name'),
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


def _rows(test, valid):
  """Aggregated rows of methods with 2 seeds x 2 budgets: test and validation accuracy."""
  return {m: {'per_seed': [[0.5, t], [0.5, t]], 'valid_per_seed': [[0.5, v], [0.5, v]]}
          for m, (t, v) in zip(('iwes_dis_w5', 'iwes_dis_w20'), zip(test, valid))}


def test_the_cap_is_chosen_on_validation_not_on_test():
  # cap 20 is better on test, cap 5 on validation: "IWeS" is cap 5 (issue 27 item 5).
  rows = _rows(test=(0.60, 0.70), valid=(0.65, 0.55))
  assert experiment.best_on_validation(rows, ('iwes_dis_w5', 'iwes_dis_w20'), 1) == 'iwes_dis_w5'
  rows = _rows(test=(0.60, 0.70), valid=(0.55, 0.65))
  assert experiment.best_on_validation(rows, ('iwes_dis_w5', 'iwes_dis_w20'), 1) == 'iwes_dis_w20'


def test_a_check_is_a_paired_difference_over_seeds_with_its_interval():
  config = iwes_config.get_config('tiny')
  per_seed = lambda *accs: {'per_seed': [[a, a] for a in accs],
                            'valid_per_seed': [[a, a] for a in accs]}
  rows = {'uniform': per_seed(0.50, 0.60, 0.70, 0.60), 'margin': per_seed(0.40, 0.50, 0.60, 0.5),
          'iwes_dis_w5': per_seed(0.52, 0.615, 0.725, 0.62)}  # +0.02 +- 0.005 over uniform
  out = {c['name']: c for c in experiment.make_checks(config, rows, 'd')}
  gap = out['d/iwes_minus_uniform']
  assert gap['value'] == pytest.approx(0.02) and gap['compare'] == '>'
  assert gap['state'] == 'holds' and 0 < gap['interval'][0] < 0.02 < gap['interval'][1]
  assert out['d/iwes_minus_best_top_k']['state'] == 'holds'     # +0.12 every seed
  rows['uniform'] = per_seed(0.52, 0.60, 0.73, 0.62)              # +0.00, +0.015, -0.005, 0
  assert {c['name']: c for c in experiment.make_checks(config, rows, 'd')}[
      'd/iwes_minus_uniform']['state'] == 'inconclusive'

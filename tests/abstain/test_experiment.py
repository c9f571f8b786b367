"""abstain's experiment end to end on the tiny config (digits, short training, small Gaussians)."""

import json

import numpy as np

from abstain import claims
from abstain import experiment
from common import report
from configs.abstain import mnist1d as abstain_config


def test_tiny_config_runs_end_to_end(tmp_path):
  config = abstain_config.get_config('tiny')
  summary = experiment.run(config, str(tmp_path))
  numbers = summary['numbers']
  # One check list (none beside it in numbers), each row in the new form: an explicit comparison
  # and an interval over seeds that decides its state.
  assert 'checks' not in numbers
  checks = summary['checks']
  assert summary['tables'] and all(t['rows'] for t in summary['tables'])
  assert summary['reproduced'] == report.verdict_from(checks)
  for c in checks:
    assert c['state'] in report.STATES and c['compare'] in ('<=', '>='), c
    assert c['evidence'] == 'interval' and c['interval'] is not None, c
  names = [c['name'] for c in checks]
  # Gaussians 2 rows per c_fn; digits: 2 rows per c_fn in each setting, 1 more in the wild one.
  assert len(names) == len(set(names)) == 2 * 3 + (2 + 3) * 3
  assert sum(n.startswith('gaussians/') for n in names) == 6
  assert sum(n.startswith('digits/wild/') for n in names) == 9
  # One seed: unbounded intervals, so every dataset check is inconclusive, never a verdict.
  assert all(c['state'] == 'inconclusive' for c in checks if c['name'].startswith('digits/'))
  assert len(numbers['digits']['wild']['c_fn=0.75']['differences_per_seed']['msp_minus_plugin']) \
      == config.seeds
  # On the Gaussians the exact Bayes rule is the best of all at every c_fn.
  for c in config.c_fns:
    for n, row in numbers['gaussians'][f'c_fn={c}'].items():
      assert row['bayes'] <= min(row.values()) + 2e-3, (c, n, row)
  digits = numbers['digits']
  assert 0.5 < digits['accuracy'] <= 1.0
  for setting in experiment.SETTINGS:
    block = digits[setting]
    risks = block[f'c_fn={config.c_fns[-1]}']['risk_per_budget']
    assert set(experiment.BASE_METHODS) <= set(risks)
    assert all(len(v) == len(config.budgets) for v in risks.values())
    # Risk can only fall as the budget grows for a fixed score.
    assert np.all(np.diff(risks['msp']) <= 1e-9)
    assert 0.0 <= block['auroc']['ood'] <= 1.0
  for fig in summary['figures']:
    assert (tmp_path / fig).exists()
  assert json.load(open(tmp_path / 'summary.json'))['claim'] == experiment.CLAIM


def _diffs(plugin_minus_msp, plugin_minus_ood):
  return {'plugin_minus_msp': list(plugin_minus_msp), 'plugin_minus_ood': list(plugin_minus_ood),
          'msp_minus_plugin': [-v for v in plugin_minus_msp]}


def test_the_comparison_is_explicit_not_inferred_from_the_check_name():
  """The old summary inferred '>=' from a name ending in 'msp_minus_plugin' and '<=' otherwise."""
  config = abstain_config.get_config('tiny')
  rows = abstain_checks(config, 'wild', _diffs([-0.1, -0.12, -0.09], [0.0, 0.002, -0.001]))
  assert [(c['compare'], c['threshold']) for c in rows] == [
      ('<=', config.checks.noise_margin), ('<=', config.checks.noise_margin),
      ('>=', config.checks.clear_gain)]
  assert [c['state'] for c in rows] == ['holds', 'holds', 'holds']
  # The auxiliary setting has no 'clearly better' row.
  assert len(abstain_checks(config, 'auxiliary', _diffs([0.0] * 3, [0.0] * 3))) == 2


def abstain_checks(config, setting, diffs):
  return claims.setting_checks(config.checks, 'mnist1d', setting, 0.25, diffs)


def test_a_borderline_difference_is_inconclusive_instead_of_flipping():
  """A mean of +0.008 (holds against 0.01) or +0.012 (fails) between two runs: over seeds that
  scatter by +-0.01 either interval straddles 0.01, so the check is inconclusive both times."""
  config = abstain_config.get_config('tiny')
  for shift in (-0.002, 0.002):
    per_seed = [0.01 + shift + d for d in (-0.01, 0.012, 0.0, -0.006, 0.004)]
    row = abstain_checks(config, 'auxiliary', _diffs(per_seed, [-0.05] * 5))[0]
    assert row['state'] == 'inconclusive', row
  row = abstain_checks(config, 'auxiliary', _diffs([0.03, 0.04, 0.035, 0.03, 0.045], [0.0] * 5))[0]
  assert row['state'] == 'fails'


def test_risk_differences_are_paired_per_seed_and_averaged_over_budgets():
  srows = [{'risk': {0.5: {'plugin': [0.2, 0.4], 'msp': [0.3, 0.5], 'ood': [0.1, 0.3]}}},
           {'risk': {0.5: {'plugin': [0.5, 0.5], 'msp': [0.4, 0.4], 'ood': [0.5, 0.7]}}}]
  diffs = claims.risk_differences(srows, 0.5)
  np.testing.assert_allclose(diffs['plugin_minus_msp'], [-0.1, 0.1])
  np.testing.assert_allclose(diffs['plugin_minus_ood'], [0.1, -0.1])
  np.testing.assert_allclose(diffs['msp_minus_plugin'], [0.1, -0.1])


def test_gaussian_checks_are_decided_by_intervals_over_the_gaussian_seeds():
  config = abstain_config.get_config('tiny')  # sizes (100, 1000)

  def seed(gap_small, gap_large):
    risk = lambda gap: {c: {'plugin': [0.3 + gap], 'bayes': [0.3]} for c in config.c_fns}
    return {100: {'risk': risk(gap_small)}, 1000: {'risk': risk(gap_large)}}

  rows = claims.gaussian_checks(config, [seed(0.02, 0.001), seed(0.021, 0.002),
                                             seed(0.022, 0.0005)])
  assert len(rows) == 2 * len(config.c_fns)
  assert all(c['state'] == 'holds' and c['compare'] == '<=' for c in rows), rows
  rows = claims.gaussian_checks(config, [seed(0.0, 0.02), seed(0.001, 0.021),
                                             seed(0.0, 0.022)])
  assert [c['state'] for c in rows[:2]] == ['fails', 'fails']
  rows = claims.gaussian_checks(config, [seed(0.0, 0.02), seed(0.001, 0.03)])  # 2 seeds
  assert [c['state'] for c in rows[:2]] == ['inconclusive', 'inconclusive']


def test_the_classifier_seed_seeds_the_models(tmp_path):
  """classifier.seed was overwritten by the run seed (0 .. seeds - 1): it had no effect."""
  rng = np.random.default_rng(0)
  arrays = {'inputs': rng.normal(size=(64, 8)).astype(np.float32),
            'label': (np.arange(64) % 3).astype(np.int32)}

  def logits(classifier_seed, workdir):
    config = abstain_config.get_config('tiny')
    config.classifier.seed = classifier_seed
    config.classifier.batch_size = 16
    config.models.mlp128.total_steps = 4
    assert experiment.model_seed(config, 1) == classifier_seed + 1
    return experiment._train(config, 'mlp128', arrays, 3, str(tmp_path / workdir), 0).logits(
        arrays['inputs'])

  default, seed3, again = logits(0, 'a'), logits(3, 'b'), logits(3, 'c')
  assert not np.allclose(default, seed3)
  np.testing.assert_array_equal(seed3, again)

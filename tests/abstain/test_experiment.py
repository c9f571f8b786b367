"""abstain's experiment end to end on the tiny config (digits, short training, small Gaussians)."""

import json

import numpy as np

from abstain import experiment
from common import report
from configs.abstain import mnist1d as abstain_config


def test_tiny_config_runs_end_to_end(tmp_path):
  config = abstain_config.get_config('tiny')
  summary = experiment.run(config, str(tmp_path))
  numbers = summary['numbers']
  # Every check is stated with its value, threshold and verdict, and the verdict is their "and".
  checks = numbers['checks']
  assert checks and all(set(c) == {'value', 'threshold', 'holds'} for c in checks.values())
  assert summary['reproduced'] == all(c['holds'] for c in checks.values())
  assert any(k.startswith('gaussians/') for k in checks)
  assert summary['checks'] and summary['tables'] and all(t['rows'] for t in summary['tables'])
  assert summary['reproduced'] == report.verdict_from(summary['checks'])
  assert any(k.startswith('digits/wild/') for k in checks)
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

"""abstain's check_config: every variant passes; bad fields are refused, named, before any data
or compute."""

import pytest

from abstain import experiment
from common import config_lib
from configs.abstain import mnist1d as abstain_config


@pytest.mark.parametrize('variant', abstain_config.VARIANTS)
def test_every_variant_passes_check_config(variant):
  experiment.check_config(abstain_config.get_config(variant))


@pytest.mark.parametrize('field,value,match', [
    ('classifier.total_steps', 0, r'classifier.total_steps=0: expected a whole number >= 1'),
    ('classifier.seed', -2, r'classifier.seed=-2: expected a whole number >= 0'),
    ('classifier.batch_size', 0, r'classifier.batch_size=0: expected a whole number >= 1'),
    ('models.mlp128.total_steps', 0, r'models.mlp128.total_steps=0'),
    ('models.mlp128_ood.learning_rate', 0.0, r'models.mlp128_ood.learning_rate=0.0'),
    ('models.mlp128.model.name', 'mpl', r"models.mlp128.model: Unknown model 'mpl'"),
    ('dataset_names', ('digit',), r"dataset_names has 'digit' \(did you mean 'digits'"),
    ('dataset_models.digits', ('mlp128', 'mlp_ood'), r"dataset_models.digits names 'mlp_ood'"),
    ('datasets.digits.aux_classes', (5, 6), r'datasets.digits.inlier_classes and '
     r'datasets.digits.aux_classes share classes \[5\]'),
    ('datasets.digits.test_outlier_classes', (7, 8),
     r'aux_classes and datasets.digits.test_outlier_classes share classes \[7\]'),
    ('datasets.digits.inlier_classes', (0,), r'at least two classes'),
    ('datasets.digits.wild_fraction', 0.9, r'val_fraction \+ wild_fraction = 1.1: must be below'),
    ('datasets.digits.aux_val_fraction', 1.0, r'aux_val_fraction=1.0: expected a finite number in '
     r'\(0.0, 1.0\)'),
    ('seeds', 0, r'seeds=0'),
    ('wild_pi', 0.0, r'wild_pi=0.0'),
    ('c_fns', (0.5, 1.5), r'c_fns=\(0.5, 1.5\): expected a non-empty sequence'),
    ('budgets', (), r'budgets=\(\): expected a non-empty sequence'),
    ('odin.temperature', 0.0, r'odin.temperature=0.0'),
    ('gaussians.sizes', (100, 0), r'gaussians.sizes=\(100, 0\)'),
    ('gaussians.figure_budget', 1.0, r'gaussians.figure_budget=1.0'),
    ('checks.noise_margin', float('nan'), r'checks.noise_margin=nan'),
    ('checks.bayes_gap_growth', float('inf'), r'checks.bayes_gap_growth=inf'),
])
def test_bad_config_fields_are_refused_before_any_data_or_compute(tmp_path, field, value, match):
  config = abstain_config.get_config('tiny')
  config_lib.set_fields(config, **{field: value})
  with pytest.raises(config_lib.ConfigError, match=match):
    experiment.run(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()


def test_a_run_without_prepared_data_stops_with_tfds_build_before_any_compute(tmp_path,
                                                                             monkeypatch):
  """The cifar100 variant read its TFDS data only after the Gaussian study had run."""
  from abstain import gaussian_study  # pylint: disable=g-import-not-at-top
  from common.data import loader  # pylint: disable=g-import-not-at-top
  config = abstain_config.get_config('cifar100')
  config.data_dir = str(tmp_path / 'no_data')
  monkeypatch.setattr(gaussian_study, 'run',
                      lambda *a, **k: pytest.fail('computed before the data was read'))
  with pytest.raises(loader.DatasetError, match=r'tfds build cifar100'):
    experiment.run(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()

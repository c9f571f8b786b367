"""Every variant of every config builds, and what can be checked without its data holds.

A config that no test builds rots: the accelerator variants (cifar, imagenet, c4) are never run
on CPU, so here each is built and checked: its experiment module's check_config passes, datasets
known, mesh and batch valid on 8 devices, loop fields valid and nothing else in a loop section,
and each model built under jax.eval_shape.
"""

import importlib
import os
import pkgutil

import jax
import jax.numpy as jnp
import ml_collections
import pytest

from common import classifier
from common import config_lib
from common import mesh as mesh_lib
from common import models
from common import train as train_lib
from common.data import loader
from configs.common import loop as loop_config
import reproduce
from tests.common.conftest import REPO

CONFIG_MODULES = sorted(
    f'configs.{pkg}.{name}'
    for pkg in sorted(os.listdir(os.path.join(REPO, 'configs')))
    if os.path.isdir(os.path.join(REPO, 'configs', pkg)) and not pkg.startswith('_')
    for _, name, _ in pkgutil.iter_modules([os.path.join(REPO, 'configs', pkg)])
    if name != 'loop')
CASES = [(m, v) for m in CONFIG_MODULES for v in importlib.import_module(m).VARIANTS]
KNOWN_DATASETS = set(loader.available()) | set(loader.NUM_CLASSES) | {'c4/en'}


def experiment_modules(config_module: str) -> list[str]:
  """The experiment module(s) that run `config_module`: its row of reproduce.EXPERIMENTS, else
  the rows of the same package (configs/<paper>/ holds the configs of <paper>'s experiments)."""
  listed = [m for _, m, c, _ in reproduce.EXPERIMENTS if c == config_module]
  if listed:
    return listed
  package = config_module.split('.')[1]
  return sorted({m for _, m, _, _ in reproduce.EXPERIMENTS if m.split('.')[0] == package})


def test_every_config_module_belongs_to_one_experiment_module():
  for module in CONFIG_MODULES:
    assert len(experiment_modules(module)) == 1, (
        f'{module}: experiment modules {experiment_modules(module)}; list it in '
        'reproduce.EXPERIMENTS or keep one experiment module per configs/<paper>/')


def test_every_experiment_module_of_the_main_job_defines_check_config():
  missing = [m for _, m, _, _ in reproduce.EXPERIMENTS
             if not callable(getattr(importlib.import_module(m), 'check_config', None))]
  assert not missing, f'no check_config(config) in {missing}'


@pytest.mark.parametrize('module,variant', CASES)
def test_check_config_passes_for_every_variant(module, variant):
  """The experiment module's own check (what common.app and reproduce call before anything
  runs) accepts every variant, including those whose data is not on this machine."""
  config = importlib.import_module(module).get_config(variant)
  for experiment in experiment_modules(module):
    check = getattr(importlib.import_module(experiment), 'check_config', None)
    assert check is not None, f'{experiment} (for {module}) has no check_config(config)'
    check(config)


def test_every_config_module_lists_its_variants():
  assert len(CONFIG_MODULES) >= 5
  for module in CONFIG_MODULES:
    with pytest.raises(ValueError, match='use one of'):
      importlib.import_module(module).get_config('no_such_variant')


def _check_loop(loop: ml_collections.ConfigDict, where: str, num_devices: int = 8,
                need_length: bool = True):
  """A loop config: valid values, a mesh and batch that fit num_devices, a resolvable length."""
  config_lib.check_loop(loop)
  mesh = mesh_lib.make_mesh(loop.mesh, jax.devices()[:num_devices])
  mesh_lib.check_rules(mesh_lib.rules_from_config(loop), mesh)
  ways = mesh_lib.batch_axis_size(mesh, mesh_lib.rules_from_config(loop))
  assert loop.batch_size % ways == 0, f'{where}: batch {loop.batch_size} over {ways} data ways'
  if need_length and loop.get('total_epochs') is None:
    assert loop.get('total_steps'), f'{where}: neither total_steps nor total_epochs'
  train_lib.make_optimizer(loop.optimizer, 1000)


def _check_classifier_model(model_cfg, dataset: str, pool: int = 1):
  assert dataset in KNOWN_DATASETS, dataset
  shape = loader.INPUT_SHAPES[dataset]
  if pool > 1:
    shape = tuple(s // pool for s in shape[:-1]) + shape[-1:]
  model = models.build(model_cfg, loader.NUM_CLASSES[dataset])
  out = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((2,) + shape),
                                          train=False))
  assert jax.tree.leaves(out)


@pytest.mark.parametrize('module,variant', CASES)
def test_config_variant_builds_and_checks(module, variant):
  config = importlib.import_module(module).get_config(variant)
  assert isinstance(config, ml_collections.ConfigDict) and config.is_locked
  where = f'{module}:{variant}'
  if 'loop' in config:  # a paper with its own model keeps the loop as a section: nothing else
    config_lib.check_fields(config.loop, loop_config.get_config())
    _check_loop(config.loop, where)
  if 'total_steps' in config:  # the reference classifier: the loop plus data and model
    _check_loop(config, where)
    _check_classifier_model(config.model, config.dataset)
  if 'classifier' in config:  # papers that train classifiers from study configs
    _check_loop(config.classifier, where, need_length=False)  # a template: models set the length
    for name in config.dataset_names:
      ds = config.datasets[name]
      dataset = ds.get('dataset', name)
      model_cfgs = ([ds.h1, ds.h2] if 'h1' in ds
                    else [config.models[m] for m in config.dataset_models[name]])
      for model_cfg in model_cfgs:
        study = classifier.study_config(config.classifier, model_cfg, seed=0)
        _check_loop(study, where)
        _check_classifier_model(study.model, dataset, model_cfg.get('pool', 1))
  if module == 'configs.fire_pe.lm':
    from fire_pe import lm as fire_lm  # pylint: disable=g-import-not-at-top
    assert config.dataset in KNOWN_DATASETS
    for name in config.encodings:
      model = fire_lm.make_model(config, name)
      out = jax.eval_shape(lambda m=model: m.init(jax.random.key(0),
                                                  jnp.zeros((1, config.train_length), jnp.int32)))
      assert jax.tree.leaves(out)


@pytest.mark.parametrize('module,variant', CASES)
def test_a_declared_rehearsal_shrinks_to_a_config_that_checks(module, variant):
  """A variant's `rehearsal` section (common.rehearsal) names existing fields only, and the
  shrunk configs of both rehearsal runs pass the experiment's check_config."""
  from common import rehearsal  # pylint: disable=g-import-not-at-top
  config = importlib.import_module(module).get_config(variant)
  if 'rehearsal' not in config:
    assert variant not in rehearsal.ACCELERATOR_VARIANTS or module.split('.')[1] not in (
        'common', 'memorisation', 'distill', 'resmem') or module == 'configs.resmem.lm', (
            f'{module}:{variant} is an accelerator variant without a rehearsal section')
    return
  for first_run in (False, True):
    shrunk = rehearsal.apply(config, first_run=first_run)
    for experiment in experiment_modules(module):
      importlib.import_module(experiment).check_config(shrunk)

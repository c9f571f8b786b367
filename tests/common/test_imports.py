"""Every package in the repository imports, and every config variant builds."""

import importlib
import os
import pkgutil

import pytest

from tests.common.conftest import REPO

PACKAGES = sorted(
    d for d in os.listdir(REPO)
    if os.path.isfile(os.path.join(REPO, d, '__init__.py')) and d not in ('tests',))


def _modules(package):
  pkg = importlib.import_module(package)
  yield package
  for info in pkgutil.walk_packages(pkg.__path__, package + '.'):
    yield info.name


@pytest.mark.parametrize('package', PACKAGES)
def test_package_imports(package):
  for name in _modules(package):
    if name.endswith('.main') or name.endswith('__main__'):
      continue  # absl binaries define flags at import; they are run by the end-to-end tests
    importlib.import_module(name)


def _config_files():
  root = os.path.join(REPO, 'configs')
  for dirpath, _, files in os.walk(root):
    for f in sorted(files):
      # configs/common/loop.py is a part that experiment configs compose, not an experiment.
      if f.endswith('.py') and f not in ('__init__.py', 'loop.py'):
        yield os.path.relpath(os.path.join(dirpath, f), REPO)


@pytest.mark.parametrize('path', list(_config_files()))
def test_config_variants_build(path):
  module = importlib.import_module(path[:-3].replace(os.sep, '.'))
  assert module.__doc__ and 'python -m' in module.__doc__, 'docstring must give the command'
  config = module.get_config(None)
  assert 'cpu' in module.__doc__
  assert config is not None
  module.get_config('cpu')


def test_main_binaries_exist():
  assert os.path.exists(os.path.join(REPO, 'common', 'main.py'))

"""The design's rules that a reader relies on, read off the source (no imports run):
arrows point down (common/ imports no paper; a paper imports no other paper, except
memorisation -> distill's loss, by design), and no file outgrows one idea."""

import ast
import os
import sys

import pytest

from tests.common.conftest import REPO

PAPERS = ('memorisation', 'fire_pe', 'pause', 'muse_mrf', 'cascades', 'mup_depth', 'resmem',
          'abstain', 'distill', 'iwes')
# (importing package, imported module): the one arrow between papers the design allows.
ALLOWED = {('memorisation', 'distill.loss')}
MAX_FILE_LINES = 500
MAX_COMMON_FUNCTION_LINES = 80


def _sources(package):
  root = os.path.join(REPO, package)
  for dirpath, dirnames, files in os.walk(root):
    dirnames[:] = [d for d in dirnames if d != '__pycache__']
    for f in sorted(files):
      if f.endswith('.py'):
        yield os.path.join(dirpath, f)


def _imports(path):
  """(module, names) of every import statement in the file, function-level ones included:
  `from distill import loss` is ('distill', ('loss',)), `import a.b` is ('a.b', ())."""
  with open(path, encoding='utf-8') as f:
    tree = ast.parse(f.read(), path)
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      yield from ((alias.name, ()) for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      yield node.module, tuple(alias.name for alias in node.names)


def _allowed(package, module, names):
  targets = [module] + [f'{module}.{n}' for n in names]
  return any(package == src and (t == dst or t.startswith(dst + '.'))
             for src, dst in ALLOWED for t in targets)


def _arrows(package):
  """(file, module) for every import of another paper from `package`."""
  for path in _sources(package):
    for module, names in _imports(path):
      top = module.split('.')[0]
      if top in PAPERS and top != package and not _allowed(package, module, names):
        yield os.path.relpath(path, REPO), module


@pytest.mark.parametrize('package', ('common',) + PAPERS)
def test_no_paper_imports_another_paper_and_common_imports_none(package):
  bad = sorted(set(_arrows(package)))
  assert not bad, f'imports across packages that the design does not allow: {bad}'


def test_the_import_walk_finds_an_arrow_it_must_refuse(tmp_path, monkeypatch):
  """The walk sees a function-level import (as pause's RoPE import was)."""
  package = tmp_path / 'pause'
  package.mkdir()
  (package / 'experiment.py').write_text(
      'def make():\n  from fire_pe import encodings\n  return encodings\n')
  monkeypatch.setattr(sys.modules[__name__], 'REPO', str(tmp_path))
  assert list(_arrows('pause')) == [('pause/experiment.py', 'fire_pe')]
  assert _allowed('memorisation', 'distill', ('loss',))
  assert not _allowed('memorisation', 'distill', ('training',))


@pytest.mark.parametrize('package', ('common', 'benchmarks', 'configs') + PAPERS)
def test_no_source_file_over_500_lines(package):
  long = []
  for path in _sources(package):
    with open(path, encoding='utf-8') as f:
      count = sum(1 for _ in f)
    if count > MAX_FILE_LINES:
      long.append((os.path.relpath(path, REPO), count))
  assert not long, f'split by what they hold (DESIGN.md): {long}'


def test_no_function_in_common_over_80_lines():
  long = []
  for path in _sources('common'):
    with open(path, encoding='utf-8') as f:
      tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        count = node.end_lineno - node.lineno + 1
        if count > MAX_COMMON_FUNCTION_LINES:
          long.append((os.path.relpath(path, REPO), node.name, count))
  assert not long, f'split into named phases: {long}'

"""Every notebook in notebooks/ runs on CPU as it is: its code cells, in order, in one namespace.

Each also opens in Colab ready to run (its first code cell installs the repository there and does
nothing elsewhere) and is stored with its outputs, figures included, so that a reader sees the
results before running anything.
"""

import json
import os
import re
import subprocess
import sys
import types

import pytest

from tests.common.conftest import REPO

NOTEBOOKS = sorted(f for f in os.listdir(os.path.join(REPO, 'notebooks')) if f.endswith('.ipynb'))
MAX_BYTES = 500_000  # figures at modest dpi; a notebook past this has images to shrink


def _load(name):
  with open(os.path.join(REPO, 'notebooks', name), encoding='utf-8') as f:
    return json.load(f)


def _code_cells(name):
  return [c for c in _load(name)['cells'] if c['cell_type'] == 'code']


# fire_pe's notebook trains a toy study of several encodings: ~5-7 minutes of XLA compiles on 2
# cores, past the default run's budget; it runs with the slow tests (./test.sh -m slow).
# muse_mrf's trains a tiny backbone and its MRF: ~2.5 CPU-minutes.
SLOW = {'fire_pe.ipynb', 'muse_mrf.ipynb'}


@pytest.mark.parametrize('name', [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n
                                  for n in NOTEBOOKS])
def test_notebook_runs(name, tmp_path, monkeypatch):
  cells = _code_cells(name)
  assert cells
  monkeypatch.chdir(tmp_path)
  namespace = {'__name__': '__main__'}
  for i, cell in enumerate(cells):
    source = ''.join(cell['source'])
    assert not source.lstrip().startswith(('!', '%')), 'shell magics do not run outside Jupyter'
    exec(compile(source, f'{name}[cell {i}]', 'exec'), namespace)  # pylint: disable=exec-used


@pytest.mark.parametrize('name', NOTEBOOKS)
def test_first_code_cell_installs_the_repository_in_colab_only(name, monkeypatch):
  source = ''.join(_code_cells(name)[0]['source'])
  assert 'google.colab' in source and 'REPO_URL' in source, (
      f'{name}: the first code cell must install the repository when run in Colab')
  calls = []
  monkeypatch.setattr(subprocess, 'run', lambda *args, **kwargs: calls.append(args))
  monkeypatch.delitem(sys.modules, 'google.colab', raising=False)

  exec(compile(source, name, 'exec'), {'__name__': '__main__'})  # pylint: disable=exec-used
  assert not calls, f'{name}: the install cell must do nothing outside Colab'

  monkeypatch.setitem(sys.modules, 'google.colab', types.ModuleType('google.colab'))
  with pytest.raises(ValueError, match='REPO_URL'):  # the placeholder URL is refused, not cloned
    exec(compile(source, name, 'exec'), {'__name__': '__main__'})  # pylint: disable=exec-used
  set_url, count = re.subn(r"REPO_URL = '[^']*'", "REPO_URL = 'https://example.org/repo.git'",
                           source)
  assert count == 1, f'{name}: REPO_URL must be one string constant in the install cell'
  exec(compile(set_url, name, 'exec'), {'__name__': '__main__'})  # pylint: disable=exec-used
  assert len(calls) == 1
  command = calls[0][0]
  assert command[:4] == [sys.executable, '-m', 'pip', 'install'], command
  assert 'git+https://example.org/repo.git' in command, command


@pytest.mark.parametrize('name', NOTEBOOKS)
def test_notebook_is_stored_with_its_outputs(name):
  cells = _code_cells(name)
  counts = [c.get('execution_count') for c in cells]
  assert counts == list(range(1, len(cells) + 1)), (
      f'{name}: store it after one run of every cell, in order (execution counts {counts})')
  outputs = [o for c in cells for o in c.get('outputs', [])]
  assert outputs, f'{name} is stored without outputs'
  assert not [o for o in outputs if o['output_type'] == 'error'], f'{name} stored an error'
  assert any('image/png' in o.get('data', {}) for o in outputs), f'{name} has no stored figure'
  size = os.path.getsize(os.path.join(REPO, 'notebooks', name))
  assert size < MAX_BYTES, f'{name} is {size} bytes: lower the figures\' dpi or size'

"""Every notebook in notebooks/ runs on CPU as it is: its code cells, in order, in one namespace."""

import json
import os

import pytest

from tests.common.conftest import REPO

NOTEBOOKS = sorted(f for f in os.listdir(os.path.join(REPO, 'notebooks')) if f.endswith('.ipynb'))


@pytest.mark.parametrize('name', NOTEBOOKS)
def test_notebook_runs(name, tmp_path, monkeypatch):
  with open(os.path.join(REPO, 'notebooks', name), encoding='utf-8') as f:
    cells = [c for c in json.load(f)['cells'] if c['cell_type'] == 'code']
  assert cells
  monkeypatch.chdir(tmp_path)
  namespace = {'__name__': '__main__'}
  for i, cell in enumerate(cells):
    source = ''.join(cell['source'])
    assert not source.lstrip().startswith(('!', '%')), 'shell magics do not run outside Jupyter'
    exec(compile(source, f'{name}[cell {i}]', 'exec'), namespace)  # pylint: disable=exec-used

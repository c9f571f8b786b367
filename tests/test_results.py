"""Recorded results (results/cpu) and the README blocks generated from them."""

import json
import os

import pytest

from common import report
from common import results


def _run(root, name, gap_interval):
  report.make_summary(
      name=name, title=f'Paper {name}', claim='c', numbers={'x': 1}, workdir=str(root / name),
      checks=[report.check('gap', sum(gap_interval) / 2, compare='>', threshold=0.0,
                           interval=gap_interval)],
      tables=[report.table('Diagnosis: why', ['arm', 'slope'], [['student', 0.9]]),
              report.table('Other results', ['a'], [[1]])])


def _repo(tmp_path, readme_text):
  repo = tmp_path / 'repo'
  (repo / 'paper').mkdir(parents=True)
  (repo / 'paper' / 'README.md').write_text(readme_text)
  return repo


def test_the_repository_readmes_agree_with_the_recorded_results():
  assert results.check_readmes() == []
  recorded = results.load_recorded(os.path.join(results.REPO, results.RESULTS_DIR))
  for name, summary in recorded.items():
    assert all(c['state'] in report.STATES for c in summary.get('checks') or []), name


def test_every_experiment_of_the_main_job_is_recorded_and_none_decides_on_a_single_value():
  import reproduce  # pylint: disable=g-import-not-at-top
  recorded = results.load_recorded(os.path.join(results.REPO, results.RESULTS_DIR))
  assert set(recorded) == {name for name, *_ in reproduce.EXPERIMENTS}
  for name, summary in recorded.items():
    single = [c['name'] for c in summary['checks']
              if not c.get('informational') and c['evidence'] == 'single value']
    assert not single, f'{name}: deciding checks without an interval or a null: {single}'
  assert results.quoted() >= set(recorded) | {results.ALL}   # every result quoted in a README


def test_record_then_readme_writes_the_block_and_check_passes(tmp_path):
  _run(tmp_path / 'run', 'p', (0.01, 0.03))
  repo = _repo(tmp_path, '# P\n\n<!-- results: p -->\nold numbers\n<!-- end results: p -->\n'
                         'after\n')
  written = results.record(str(tmp_path / 'run'), str(repo / 'results' / 'cpu'))
  assert [os.path.basename(p) for p in written] == ['p.json']
  assert results.check_readmes(str(repo))[0].startswith('paper/README.md: results blocks')
  assert results.write_readmes(str(repo)) == [str(repo / 'paper' / 'README.md')]
  text = (repo / 'paper' / 'README.md').read_text()
  assert '| gap | 0.02 [0.01, 0.03] | > 0 | holds |' in text and text.endswith('after\n')
  assert 'old numbers' not in text
  assert '**Diagnosis: why**' in text and '| student | 0.9 |' in text
  assert 'Other results' not in text
  assert results.check_readmes(str(repo)) == [] and results.quoted(str(repo)) == {'p'}


def test_the_index_block_lists_every_recorded_experiment(tmp_path):
  _run(tmp_path / 'run', 'p', (0.01, 0.03))
  _run(tmp_path / 'run', 'q', (-0.03, 0.01))
  repo = _repo(tmp_path, '<!-- results: all -->\n<!-- end results: all -->\n')
  results.record(str(tmp_path / 'run'), str(repo / 'results' / 'cpu'))
  results.write_readmes(str(repo))
  text = (repo / 'paper' / 'README.md').read_text()
  assert '| `p` | Paper p | reproduced | 1 / 0 / 0 |' in text
  assert '| `q` | Paper q | inconclusive | 0 / 0 / 1 |' in text
  assert results.check_readmes(str(repo)) == []


def test_a_block_edited_by_hand_fails_with_the_file_named(tmp_path):
  _run(tmp_path / 'run', 'p', (0.01, 0.03))
  repo = _repo(tmp_path, '<!-- results: p -->\n<!-- end results: p -->\n')
  results.record(str(tmp_path / 'run'), str(repo / 'results' / 'cpu'))
  results.write_readmes(str(repo))
  path = repo / 'paper' / 'README.md'
  path.write_text(path.read_text().replace('0.02 [0.01, 0.03]', '0.05 [0.04, 0.06]'))
  stale = results.check_readmes(str(repo))
  assert len(stale) == 1 and stale[0].startswith("paper/README.md: results blocks ['p']")


def test_a_block_naming_no_recorded_result_and_a_stateless_record_are_refused(tmp_path):
  repo = _repo(tmp_path, '<!-- results: nothing -->\n<!-- end results: nothing -->\n')
  with pytest.raises(results.ResultsError, match=r"README.md: the results block 'nothing'"):
    results.check_readmes(str(repo))
  bad = repo / 'results' / 'cpu' / 'q.json'
  bad.parent.mkdir(parents=True)
  bad.write_text(json.dumps({'name': 'q', 'title': 'Q', 'claim': 'c', 'verdict': None,
                             'checks': [{'name': 'x', 'value': 1, 'threshold': 0}]}))
  with pytest.raises(report.SummaryError, match='q.json: a check must .* carry a state'):
    results.load_recorded(str(bad.parent))


def test_large_numbers_are_not_recorded():
  summary = {'name': 'p', 'title': 'P', 'claim': 'c', 'verdict': 'reproduced', 'checks': [],
             'numbers': {'big': list(range(50_000))}}
  out = results.recorded_form(summary)
  assert 'numbers' not in out and 'bytes' in out['numbers_omitted']

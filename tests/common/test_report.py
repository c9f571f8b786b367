"""summary.json and the report that collects them."""

import json

import pytest

from common import report


def test_report_collects_every_summary(tmp_path):
  for name, ok in (('a', True), ('b', False), ('c', None)):
    report.make_summary(name=name, title=f'Paper {name}', claim=f'claim {name}',
                        numbers={'x': 1.5, 'nested': {'y': 2}}, reproduced=ok,
                        workdir=str(tmp_path / name))
  path = report.build_report(str(tmp_path), failures={'d': 'Traceback\nValueError: boom'})
  text = open(path).read()
  assert 'claim a' in text and '| reproduced |' in text
  assert 'NOT reproduced' in text and 'inconclusive' in text and 'ValueError: boom' in text
  assert '| x | 1.5 |' in text and "'y'" not in text  # nested numbers stay in summary.json
  combined = json.load(open(tmp_path / 'summary.json'))
  assert set(combined['experiments']) == {'a', 'b', 'c'} and 'd' in combined['failures']


def test_checks_and_tables_render_and_decide_the_verdict(tmp_path):
  checks = [report.check('exponent_in_L', -1.66, '[-1.65, -1.35]', False),
            report.check('exponent_in_n', -0.07, '|x| <= 0.15', True),
            report.check('speed', 1.2, '>= 1', True, informational=True)]
  summary = report.make_summary(
      name='p', title='Paper p', claim='L^-3/2', numbers={'deep': {'a': [1, 2]}},
      checks=checks, workdir=str(tmp_path / 'p'),
      tables=[report.table('Loss by length', ['encoding', '512', '1024'],
                           [['fire', 1.5651, 1.9], ['kerple', 1.6, 1.61]])])
  assert summary['reproduced'] is False  # from the checks
  report.make_summary(  # an older summary: checks kept as numbers['checks']
      name='q', title='Paper q', claim='c', reproduced=True, workdir=str(tmp_path / 'q'),
      numbers={'checks': {'digits/standard': {'gap': 0.02, 'holds': True},
                          'regression': {'d2': {'falls': True, 'holds': True},
                                         'd3': {'falls': False, 'holds': False},
                                         'holds': False}}})
  text = open(report.build_report(str(tmp_path), timings={'p': 61.0, 'q': 5.0})).read()
  top = text.split('\n## ')[0]
  assert '| NOT reproduced | 1 of 2 | exponent_in_L = -1.66 (threshold [-1.65, -1.35]) | 61 s |' \
      in top
  assert '2 of 3 | regression/d3 = falls: no |' in top and 'Total wall time: 1.1 min.' in top
  assert '| exponent_in_L | -1.66 | [-1.65, -1.35] | **no** |' in text
  assert '| speed | 1.2 | >= 1 | yes (informational) |' in text
  assert '**Loss by length**' in text and '| fire | 1.565 | 1.9 |' in text
  assert 'All numbers: [`p/summary.json`](p/summary.json)' in text


def test_malformed_checks_and_tables_are_refused(tmp_path):
  with pytest.raises(report.SummaryError, match='row 1 has 2 cells for 3 columns'):
    report.table('t', ['a', 'b', 'c'], [[1, 2, 3], [1, 2]])
  with pytest.raises(report.SummaryError, match='must come from report.check'):
    report.make_summary(name='p', title='t', claim='c', numbers={}, workdir=str(tmp_path),
                        checks=[{'name': 'x', 'holds': True}])
  with pytest.raises(report.SummaryError, match='pass checks'):
    report.make_summary(name='p', title='t', claim='c', numbers={}, workdir=str(tmp_path))
  assert not (tmp_path / 'summary.json').exists()

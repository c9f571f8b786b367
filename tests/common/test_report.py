"""summary.json and the report that collects them."""

import json

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
  combined = json.load(open(tmp_path / 'summary.json'))
  assert set(combined['experiments']) == {'a', 'b', 'c'} and 'd' in combined['failures']

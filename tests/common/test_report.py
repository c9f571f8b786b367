"""summary.json, the three-valued checks that decide a verdict, and the report that collects them."""

import json
import math

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
  assert '| not reproduced |' in text and '| inconclusive |' in text and 'ValueError: boom' in text
  assert '| x | 1.5 |' in text and "'y'" not in text  # nested numbers stay in summary.json
  assert ('Experiments: 1 reproduced, 1 not reproduced, 1 inconclusive, 1 failed to run.'
          in text)
  combined = json.load(open(tmp_path / 'summary.json'))
  assert set(combined['experiments']) == {'a', 'b', 'c'} and 'd' in combined['failures']


@pytest.mark.parametrize('compare,threshold,interval,state', [
    ('>', 0.0, (0.01, 0.05), 'holds'),           # the whole interval above
    ('>', 0.0, (-0.05, -0.01), 'fails'),         # the whole interval below
    ('>', 0.0, (-0.01, 0.05), 'inconclusive'),   # straddles
    ('<=', 0.02, (0.0, 0.02), 'holds'),
    ('<=', 0.02, (0.21, 0.26), 'fails'),
    ('in', (-1.65, -1.35), (-1.6, -1.4), 'holds'),
    ('in', (-1.65, -1.35), (-1.8, -1.7), 'fails'),
    ('in', (-1.65, -1.35), (-1.7, -1.5), 'inconclusive'),
    ('outside', (-0.1, 0.1), (0.2, 0.3), 'holds'),
])
def test_an_interval_decides_a_check_in_three_states(compare, threshold, interval, state):
  value = sum(interval) / 2
  c = report.check('x', value, compare=compare, threshold=threshold, interval=interval)
  assert c['state'] == state and c['evidence'] == 'interval'
  assert c['holds'] == (state == 'holds')
  if state == 'inconclusive':
    assert 'straddles' in c['reason']


def test_a_point_value_alone_is_marked_as_a_single_value():
  c = report.check('gap', 0.004, compare='>', threshold=0.0)
  assert c['state'] == 'holds' and c['evidence'] == 'single value'
  old = report.check('gap', 0.004, '> 0', True)   # the two-valued form, while papers move
  assert old['state'] == 'holds' and old['evidence'] == 'single value'
  exact = report.check('agreement', 1e-14, compare='<', threshold=1e-6, evidence='exact')
  assert exact['evidence'] == 'exact'


def test_a_stated_reason_makes_a_check_inconclusive_whatever_the_numbers():
  c = report.check('pause minus baseline', 0.0, compare='>=', threshold=-0.02,
                   interval=(0.0, 0.0), inconclusive='both arms at the floor (exact match 0)')
  assert c['state'] == 'inconclusive' and c['reason'].startswith('both arms')
  nan = report.check('x', float('nan'), compare='>', threshold=0.0)
  assert nan['state'] == 'inconclusive' and 'not a finite number' in nan['reason']


def test_mean_interval_is_the_student_t_interval_over_seeds():
  out = report.mean_interval([1.0, 2.0, 3.0])
  # mean 2, sd 1, t_{0.975, 2} = 4.3027: half-width 4.3027 / sqrt(3) = 2.4841
  assert out['mean'] == 2.0 and out['n'] == 3
  assert math.isclose(out['high'] - 2.0, 2.4841, rel_tol=1e-4)
  one = report.mean_interval([0.3])
  assert one['low'] == -math.inf and one['high'] == math.inf   # one seed decides nothing
  c = report.check('x', one['mean'], compare='>', threshold=0.0,
                   interval=(one['low'], one['high']))
  assert c['state'] == 'inconclusive'
  low, high = report.percentile_interval(list(range(1001)))
  assert low == pytest.approx(25.0) and high == pytest.approx(975.0)
  with pytest.raises(report.SummaryError, match='finite samples'):
    report.mean_interval([1.0, float('nan')])


def test_the_verdict_follows_the_rule_from_the_deciding_checks():
  hold = report.check('a', 1.0, compare='>', threshold=0.0, interval=(0.5, 1.5))
  fail = report.check('b', -1.0, compare='>', threshold=0.0, interval=(-1.5, -0.5))
  unsure = report.check('c', 0.1, compare='>', threshold=0.0, interval=(-0.5, 0.7))
  info_fail = report.check('d', -1.0, compare='>', threshold=0.0, informational=True)
  assert report.verdict([hold, info_fail]) == 'reproduced'
  assert report.verdict([hold, unsure]) == 'inconclusive'
  assert report.verdict([hold, unsure, fail]) == 'not reproduced'
  assert report.verdict([info_fail]) is None


def test_checks_and_tables_render_with_states_intervals_and_counts(tmp_path):
  checks = [report.check('exponent in L', -1.66, compare='in', threshold=(-1.65, -1.35),
                         interval=(-1.74, -1.58)),
            report.check('exponent in n', -0.07, compare='in', threshold=(-0.15, 0.15),
                         interval=(-0.1, -0.04)),
            report.check('speed', 1.2, compare='>=', threshold=1.0, informational=True)]
  summary = report.make_summary(
      name='p', title='Paper p', claim='L^-3/2', numbers={'deep': {'a': [1, 2]}},
      checks=checks, workdir=str(tmp_path / 'p'),
      tables=[report.table('Loss by length', ['encoding', '512', '1024'],
                           [['fire', 1.5651, 1.9], ['kerple', 1.6, 1.61]])])
  assert summary['reproduced'] is None and summary['verdict'] == 'inconclusive'
  assert summary['verdict_rule'] == report.VERDICT_RULE
  text = open(report.build_report(str(tmp_path), timings={'p': 61.0})).read()
  top = text.split('\n## ')[0]
  assert ('| inconclusive | 1 / 0 / 1 | exponent in L = -1.66 [-1.74, -1.58] '
          '(in [-1.65, -1.35]: inconclusive) | - | 61 s |') in top
  assert 'Deciding checks: 1 hold, 0 fail, 1 inconclusive.' in top
  assert ('| exponent in L | -1.66 [-1.74, -1.58] | in [-1.65, -1.35] | inconclusive '
          '(interval [-1.74, -1.58] straddles [-1.65, -1.35]) | interval |') in text
  assert '| speed | 1.2 | >= 1 | holds (informational) | single value |' in text
  assert '**Loss by length**' in text and '| fire | 1.565 | 1.9 |' in text
  assert 'All numbers: [`p/summary.json`](p/summary.json)' in text


def test_the_report_compares_a_run_with_the_recorded_results(tmp_path):
  def summary(gap_interval):
    return report.make_summary(
        name='p', title='Paper p', claim='c', numbers={}, workdir=str(tmp_path / 'run' / 'p'),
        checks=[report.check('gap', sum(gap_interval) / 2, compare='>', threshold=0.0,
                             interval=gap_interval),
                report.check('other', 1.0, compare='>', threshold=0.0, interval=(0.5, 1.5))])
  recorded = tmp_path / 'results'
  recorded.mkdir()
  (recorded / 'p.json').write_text(json.dumps(summary((0.01, 0.03))))
  summary((-0.01, 0.03))    # the fresh run: the gap's interval now straddles 0
  text = open(report.build_report(str(tmp_path / 'run'), recorded=str(recorded))).read()
  # Each recorded interval clears 0 by half its width: a reseed moves each with p = 0.08.
  assert '| 1 of 2 moved (a reseed: ~0.2) |' in text.split('\n## ')[0]
  assert ('| gap | 0.02 [0.01, 0.03] | 0.01 [-0.01, 0.03] | holds | inconclusive | 0.08 | '
          '**moved** |') in text
  assert '| other | 1 [0.5, 1.5] | 1 [0.5, 1.5] | holds | holds | 0.08 | same |' in text


def _move(value, interval, compare='>', threshold=0.0, **kw):
  return report.checks_lib.rerun_move_probability(
      report.check('c', value, compare=compare, threshold=threshold, interval=interval, **kw))


def test_a_check_whose_interval_end_sits_on_its_threshold_moves_on_a_reseed_half_the_time():
  assert _move(1.0, (1e-9, 2.0)) == pytest.approx(0.5, abs=1e-6)
  assert _move(-1.0, (-2.0, -1e-9), compare='<') == pytest.approx(0.5, abs=1e-6)
  # Clearing the threshold by a full interval width: rarely (z = 1.96: P(N(0,2) < -3 z / 2)).
  assert _move(3.0, (2.0, 4.0)) == pytest.approx(0.0028, abs=2e-4)
  # Straddling, centred on it: a reseed decides it only when it moves by z/sqrt(2) se or more.
  assert _move(0.0, (-1.0, 1.0)) == pytest.approx(0.166, abs=1e-3)
  # 'in': an interval well inside a wide band stays; one as wide as the band moves.
  assert _move(0.0, (-0.1, 0.1), compare='in', threshold=(-1.0, 1.0)) < 1e-6
  assert _move(0.0, (-1.0, 1.0), compare='in', threshold=(-1.0, 1.0)) > 0.5


def test_only_an_interval_decided_state_has_a_reseed_probability():
  assert _move(1.0, None) is None                                       # a single value
  assert _move(1.0, (0.5, 1.5), evidence='null') is None                # a null decides it
  assert _move(1.0, (0.5, 1.5), inconclusive='both arms at the floor') is None
  assert report.checks_lib.expected_moves([
      report.check('a', 1.0, compare='>', threshold=0.0, interval=(1e-9, 2.0)),
      report.check('b', 1.0, compare='>', threshold=0.0, interval=(1e-9, 2.0),
                   informational=True),
      report.check('c', 1.0, compare='>', threshold=0.0)]) == pytest.approx((0.5, 1))


def test_malformed_checks_and_tables_are_refused(tmp_path):
  with pytest.raises(report.SummaryError, match='row 1 has 2 cells for 3 columns'):
    report.table('t', ['a', 'b', 'c'], [[1, 2, 3], [1, 2]])
  with pytest.raises(report.SummaryError, match='must come from report.check'):
    report.make_summary(name='p', title='t', claim='c', numbers={}, workdir=str(tmp_path),
                        checks=[{'name': 'x', 'holds': True}])
  with pytest.raises(report.SummaryError, match='pass checks'):
    report.make_summary(name='p', title='t', claim='c', numbers={}, workdir=str(tmp_path))
  with pytest.raises(report.SummaryError, match='not both'):
    report.check('x', 1.0, holds=True, compare='>', threshold=0.0)
  with pytest.raises(report.SummaryError, match='threshold=\\(low, high\\)'):
    report.check('x', 1.0, compare='in', threshold=0.5)
  with pytest.raises(report.SummaryError, match='low <= high'):
    report.check('x', 1.0, compare='>', threshold=0.0, interval=(2.0, 1.0))
  with pytest.raises(report.SummaryError, match="compare='=='"):
    report.check('x', 1.0, compare='==', threshold=0.0)
  assert not (tmp_path / 'summary.json').exists()


def test_a_summary_whose_checks_lack_a_state_is_refused_with_the_file_named(tmp_path):
  bad = tmp_path / 'p' / 'summary.json'
  bad.parent.mkdir()
  bad.write_text(json.dumps({'name': 'p', 'title': 'P', 'claim': 'c', 'verdict': None,
                             'checks': [{'name': 'x', 'value': 1, 'threshold': 0,
                                         'holds': True}], 'numbers': {}}))
  with pytest.raises(report.SummaryError, match=f'{bad}.*carry a state'):
    report.load_summary(str(bad))
  text = open(report.build_report(str(tmp_path))).read()   # the others still reported
  assert '| p | FAILED: SummaryError:' in text


def test_proportion_interval_is_wilsons():
  low, high = report.proportion_interval(297, 300)     # 0.99 over 300 test examples
  assert 0.970 < low < 0.972 and 0.996 < high < 0.997
  assert report.proportion_interval(0, 10)[0] == 0.0
  assert report.proportion_interval(10, 10)[1] == pytest.approx(1.0)
  with pytest.raises(report.SummaryError, match='0 <= successes <= n'):
    report.proportion_interval(11, 10)

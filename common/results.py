"""Recorded results: each experiment's cpu summary kept under results/cpu/<name>.json, and the README
blocks generated from them (a README quotes numbers only through such a block).

    python -m common.results record --from=runs/cpu     # runs/cpu/*/summary.json -> results/cpu/
    python -m common.results readme                      # rewrites every README's results blocks
    python -m common.results readme --check              # exit 1, naming the file, when one differs

A block sits between two markers a README places where the numbers belong:

    <!-- results: pause -->
    ... generated: the verdict, and each check's value [interval], threshold and state ...
    <!-- end results: pause -->

The main job's report compares a fresh run with these files (common.report, `recorded=`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Any

from common import report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join('results', 'cpu')
# A recorded summary keeps what the report and the README blocks read; `numbers` only while small.
KEPT = ('name', 'title', 'claim', 'verdict', 'verdict_rule', 'reproduced', 'checks', 'tables',
        'notes', 'config')
MAX_NUMBERS_BYTES = 50_000
_BLOCK = re.compile(r'(<!-- results: (?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- end results: '
                    r'(?P=name) -->)', re.S)


class ResultsError(ValueError):
  """A recorded result or README block that is missing, malformed or out of date."""


def recorded_form(summary: dict[str, Any]) -> dict[str, Any]:
  """The part of a summary that is recorded (its numbers only when they are small)."""
  out = {k: summary[k] for k in KEPT if k in summary}
  numbers = json.dumps(summary.get('numbers', {}))
  if len(numbers) <= MAX_NUMBERS_BYTES:
    out['numbers'] = summary.get('numbers', {})
  else:
    out['numbers_omitted'] = f'{len(numbers)} bytes: see the run\'s summary.json'
  return out


def record(run_root: str, results_dir: str) -> list[str]:
  """Writes results_dir/<name>.json for every summary under run_root; returns the paths."""
  written = []
  for dirpath, dirnames, filenames in os.walk(run_root):
    dirnames[:] = sorted(d for d in dirnames if d not in ('checkpoints', 'tensorboard'))
    if report.SUMMARY in filenames and os.path.abspath(dirpath) != os.path.abspath(run_root):
      summary = report.load_summary(os.path.join(dirpath, report.SUMMARY))
      os.makedirs(results_dir, exist_ok=True)
      path = os.path.join(results_dir, f'{summary["name"]}.json')
      with open(path, 'w', encoding='utf-8') as f:
        json.dump(recorded_form(summary), f, indent=1, sort_keys=False)
        f.write('\n')
      written.append(path)
  if not written:
    raise ResultsError(f'No summary.json under {run_root}: run the main job first.')
  return written


def load_recorded(results_dir: str) -> dict[str, dict[str, Any]]:
  """{name: recorded summary} of every results_dir/*.json, each validated (errors name the file)."""
  out = {}
  if not os.path.isdir(results_dir):
    return out
  for f in sorted(os.listdir(results_dir)):
    if f.endswith('.json'):
      summary = report.load_summary(os.path.join(results_dir, f))
      if f != f'{summary["name"]}.json':
        raise ResultsError(f'{os.path.join(results_dir, f)} holds the result of '
                           f'{summary["name"]!r}: name it {summary["name"]}.json.')
      out[summary['name']] = summary
  return out


def block(summary: dict[str, Any], results_dir: str = RESULTS_DIR) -> str:
  """The README block of one recorded result (markdown, without the markers): the verdict, each
  check's value [interval], threshold and state, and any table titled 'Diagnosis: ...'."""
  lines = [f'Recorded cpu run (`{results_dir}/{summary["name"]}.json`): '
           f'**{summary["verdict"] or "no verdict"}**'
           + (f' ({summary["verdict_rule"]}).' if summary.get('checks') else '.'), '']
  checks = summary.get('checks') or []
  if checks:
    lines += report.markdown_table(
        ['check', 'value [interval]', 'threshold', 'state'],
        [[c['name'], report.value_text(c), report.threshold_text(c), report.state_text(c)]
         for c in checks])
    lines.append('')
  for t in summary.get('tables') or []:   # the diagnosis of a claim that does not reproduce
    if t['title'].startswith('Diagnosis'):
      lines += [f'**{t["title"]}**', ''] + report.markdown_table(t['columns'], t['rows']) + ['']
      if t.get('note'):
        lines += [t['note'], '']
  return '\n'.join(lines)


ALL = 'all'   # the block name of the index: every recorded experiment's verdict and counts


def index_block(recorded: dict[str, dict[str, Any]], results_dir: str = RESULTS_DIR) -> str:
  """The README block `<!-- results: all -->`: one row per recorded experiment."""
  rows = []
  for name, s in sorted(recorded.items()):
    deciding = [c for c in s.get('checks') or [] if not c.get('informational')]
    counts = ' / '.join(str(sum(c['state'] == state for c in deciding))
                        for state in report.STATES) if deciding else '-'
    rows.append([f'`{name}`', s['title'], s['verdict'] or '-', counts])
  return '\n'.join([f'Recorded cpu runs (`{results_dir}/`; deciding checks holds / fails / '
                    'inconclusive):', ''] + report.markdown_table(
                        ['experiment', 'title', 'verdict', 'checks'], rows) + [''])


def _readmes(repo: str) -> list[str]:
  out = []
  for dirpath, dirnames, filenames in os.walk(repo):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith('.') and d not in (
        'runs', 'results', '__pycache__', 'node_modules'))
    out += [os.path.join(dirpath, f) for f in sorted(filenames) if f == 'README.md']
  return out


def render_readme(text: str, recorded: dict[str, dict[str, Any]], path: str,
                  results_dir: str = RESULTS_DIR) -> str:
  """`text` with every results block regenerated; a block naming no recorded result is an
  error."""
  def replace(match):
    name = match.group('name')
    if name == ALL:
      return match.group(1) + index_block(recorded, results_dir) + match.group(4)
    if name not in recorded:
      raise ResultsError(f'{path}: the results block {name!r} names no recorded result '
                         f'({results_dir}/{name}.json); available: {sorted(recorded)}.')
    return match.group(1) + block(recorded[name], results_dir) + match.group(4)
  return _BLOCK.sub(replace, text)


def _rendered(repo: str, results_dir: str | None):
  """(path, text, regenerated text) of every README under repo."""
  recorded = load_recorded(results_dir or os.path.join(repo, RESULTS_DIR))
  for path in _readmes(repo):
    with open(path, encoding='utf-8') as f:
      text = f.read()
    yield path, text, render_readme(text, recorded, path)


def check_readmes(repo: str = REPO, results_dir: str | None = None) -> list[str]:
  """The README files whose results blocks differ from what `readme` would write ([] when all
  agree); each entry names the file and the blocks."""
  stale = []
  for path, text, new in _rendered(repo, results_dir):
    if text != new:
      fresh = {m.group('name'): m.group('body') for m in _BLOCK.finditer(new)}
      names = [m.group('name') for m in _BLOCK.finditer(text)
               if m.group('body') != fresh[m.group('name')]]
      stale.append(f'{os.path.relpath(path, repo)}: results blocks {names} differ from '
                   f'{RESULTS_DIR}; run `python -m common.results readme` (never edit them by '
                   'hand)')
  return stale


def write_readmes(repo: str = REPO, results_dir: str | None = None) -> list[str]:
  """Rewrites every README's results blocks; returns the files changed."""
  changed = []
  for path, text, new in _rendered(repo, results_dir):
    if new != text:
      with open(path, 'w', encoding='utf-8') as f:
        f.write(new)
      changed.append(path)
  return changed


def quoted(repo: str = REPO) -> set[str]:
  """The names of the recorded results some README quotes through a block."""
  names = set()
  for path in _readmes(repo):
    with open(path, encoding='utf-8') as f:
      names |= {m.group('name') for m in _BLOCK.finditer(f.read())}
  return names


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('command', choices=('record', 'readme'))
  parser.add_argument('--from', dest='run_root', default='runs/cpu')
  parser.add_argument('--results', default=os.path.join(REPO, RESULTS_DIR))
  parser.add_argument('--check', action='store_true', help='readme: report, change nothing')
  args = parser.parse_args(argv)
  if args.command == 'record':
    for path in record(args.run_root, args.results):
      print(path)
    return 0
  if args.check:
    stale = check_readmes(REPO, args.results)
    print('\n'.join(stale) or 'Every README block agrees with the recorded results.')
    return 1 if stale else 0
  for path in write_readmes(REPO, args.results):
    print(f'updated {path}')
  return 0


if __name__ == '__main__':
  sys.exit(main())

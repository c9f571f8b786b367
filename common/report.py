"""summary.json for each experiment, and the one report (markdown + figures) that collects them.

A summary states the paper's claim, its checks (common.checks: each holds, fails or is
inconclusive, decided by an interval or a null where the quantity is noisy), the verdict they give
(reproduced / not reproduced / inconclusive, by VERDICT_RULE), the numbers measured, its result
tables and figures (paths relative to its workdir). The report compares each run with the
recorded results (results/cpu/<name>.json) when they exist.

    python -m common.report --root=runs/cpu [--recorded=results/cpu]   # writes runs/cpu/report.md
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import jax

# Re-exported: papers state their checks through report (report.check, report.mean_interval).
from common import checks as checks_lib
from common.checks import check  # pylint: disable=unused-import
from common.checks import COMPARISONS  # pylint: disable=unused-import
from common.checks import decide  # pylint: disable=unused-import
from common.checks import EVIDENCE  # pylint: disable=unused-import
from common.checks import FAILS
from common.checks import HOLDS
from common.checks import INCONCLUSIVE
from common.checks import jsonable
from common.checks import mean_interval  # pylint: disable=unused-import
from common.checks import percentile_interval  # pylint: disable=unused-import
from common.checks import proportion_interval  # pylint: disable=unused-import
from common.checks import STATES
from common.checks import SummaryError
from common.checks import validate_check
from common.checks import verdict
from common.checks import VERDICT_RULE
from common.checks import verdict_from  # pylint: disable=unused-import

SUMMARY = 'summary.json'


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
          note: str = '') -> dict[str, Any]:
  """A paper's result table as the report renders it (rows x columns chosen by the paper)."""
  columns = [str(c) for c in columns]
  rows = [list(r) for r in rows]
  bad = [i for i, r in enumerate(rows) if len(r) != len(columns)]
  if bad:
    raise SummaryError(f'Table {title!r}: row {bad[0]} has {len(rows[bad[0]])} cells for '
                       f'{len(columns)} columns {columns}.')
  return {'title': title, 'columns': columns, 'rows': jsonable(rows), 'note': note}


def make_summary(*, name: str, title: str, claim: str, numbers: dict[str, Any],
                 reproduced: bool | None | str = 'checks', workdir: str,
                 figures: Sequence[str] = (), notes: str = '', config=None,
                 checks: Sequence[dict[str, Any]] | None = None,
                 tables: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
  """Writes workdir/summary.json (process 0) and returns it.

  checks: `check(...)` entries, each with its state (the report counts holds / fails /
  inconclusive and names those that do not hold); the verdict follows from them by VERDICT_RULE
  (`reproduced` True / False / None for inconclusive). A summary without checks states
  `reproduced` itself. tables: `table(...)` entries, the paper's main results; the full nested
  `numbers` stay in summary.json.
  """
  checks = list(checks or [])
  for c in checks:
    validate_check(c, name)
  for t in tables:
    if not isinstance(t, dict) or not {'title', 'columns', 'rows'} <= set(t):
      raise SummaryError(f'{name}: a table must come from report.table(...); got {t!r}.')
  if reproduced == 'checks':
    if not checks:
      raise SummaryError(f'{name}: pass checks=[...] or reproduced=True/False/None.')
    result = verdict(checks)
  else:
    result = {True: 'reproduced', False: 'not reproduced', None: 'inconclusive'}[reproduced]
  summary = {
      'name': name, 'title': title, 'claim': claim,
      'reproduced': {'reproduced': True, 'not reproduced': False}.get(result),
      'verdict': result, 'verdict_rule': VERDICT_RULE if checks else 'stated by the experiment',
      'checks': checks, 'tables': list(tables),
      'numbers': jsonable(numbers),
      'figures': [os.path.relpath(f, workdir) for f in figures if f],
      'notes': notes,
  }
  if config is not None:
    summary['config'] = json.loads(config.to_json_best_effort())
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    tmp = os.path.join(workdir, SUMMARY + '.tmp')
    with open(tmp, 'w', encoding='utf-8') as f:
      json.dump(summary, f, indent=2, sort_keys=False)
    os.replace(tmp, os.path.join(workdir, SUMMARY))
  return summary


def pyplot():
  """matplotlib.pyplot on the file-only Agg backend (no display needed on a cluster or in CI)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def save_figure(fig, path: str, dpi: int = 100) -> str:
  """Lays out, writes and closes `fig`; returns `path`."""
  fig.tight_layout()
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  fig.savefig(path, dpi=dpi)
  pyplot().close(fig)
  return path


def plot_training_curves(history: list[dict[str, Any]], path: str, title: str = '') -> str:
  """Train loss against step, and every eval accuracy on a second axis."""
  fig, ax = pyplot().subplots(figsize=(6, 4))
  train = [r for r in history if 'loss' in r]
  ax.plot([r['step'] for r in train], [r['loss'] for r in train], label='train loss')
  ax.set_xlabel('step')
  ax.set_ylabel('loss')
  ax.set_yscale('log')
  evals = sorted({k for r in history for k in r if k.endswith('/accuracy')})
  if evals:
    ax2 = ax.twinx()
    for key in evals:
      rows = [r for r in history if key in r]
      ax2.plot([r['step'] for r in rows], [r[key] for r in rows], 'o--', label=key)
    ax2.set_ylabel('accuracy')
    ax2.legend(loc='center right')
  ax.legend(loc='upper right')
  ax.set_title(title)
  return save_figure(fig, path)


def _fmt(value) -> str:
  if isinstance(value, bool) or value is None:
    return {True: 'yes', False: 'no', None: '-'}[value]
  if isinstance(value, float):
    return f'{value:.4g}'
  if isinstance(value, (list, tuple)):
    return '[' + ', '.join(_fmt(v) for v in value) + ']'
  if isinstance(value, dict):
    return ', '.join(f'{k}: {_fmt(v)}' for k, v in value.items())
  return str(value)


def threshold_text(c) -> str:
  if c.get('threshold') is None:
    return '-'
  compare = c.get('compare')
  if compare in ('in', 'outside'):
    low, high = c['threshold']
    return f'{compare} [{_fmt(low)}, {_fmt(high)}]'
  return f'{compare} {_fmt(c["threshold"])}' if compare else _fmt(c['threshold'])


def value_text(c) -> str:
  interval = c.get('interval')
  return _fmt(c['value']) + (f' [{_fmt(interval[0])}, {_fmt(interval[1])}]' if interval else '')


def state_text(c) -> str:
  state = c['state']
  text = {HOLDS: 'holds', FAILS: '**fails**', INCONCLUSIVE: 'inconclusive'}[state]
  if state == INCONCLUSIVE and c.get('reason'):
    text += f' ({c["reason"]})'
  return text + (' (informational)' if c.get('informational') else '')


def _check_line(c) -> str:
  return f'{c["name"]} = {value_text(c)} ({threshold_text(c)}: {c["state"]})'


def markdown_table(columns, rows) -> list[str]:
  cell = lambda v: _fmt(v).replace('|', '\\|').replace('\n', ' ')
  return (['| ' + ' | '.join(cell(c) for c in columns) + ' |',
           '|' + '---|' * len(columns)] +
          ['| ' + ' | '.join(cell(v) for v in row) + ' |' for row in rows])


def load_summary(path: str) -> dict[str, Any]:
  """A summary.json (or a recorded result), its checks validated: an error names the file."""
  with open(path, encoding='utf-8') as f:
    summary = json.load(f)
  if not isinstance(summary, dict) or not {'name', 'title', 'claim'} <= set(summary):
    raise SummaryError(f'{path}: not a summary (needs name, title, claim).')
  for c in summary.get('checks') or []:
    validate_check(c, path)
  if 'verdict' not in summary:
    raise SummaryError(f'{path}: no verdict; rerun the experiment to write a current summary.')
  return summary


def compare_with_recorded(summary: dict[str, Any], recorded: dict[str, Any]) -> list[list[Any]]:
  """Per check of either: [name, recorded value, new value, recorded state, new state, the
  probability that a reseed moves the recorded state (checks.rerun_move_probability), moved]."""
  old = {c['name']: c for c in recorded.get('checks') or []}
  new = {c['name']: c for c in summary.get('checks') or []}
  rows = []
  for name in list(old) + [n for n in new if n not in old]:
    a, b = old.get(name), new.get(name)
    rows.append([name, value_text(a) if a else '-', value_text(b) if b else '-',
                 a['state'] if a else 'absent', b['state'] if b else 'absent',
                 _probability(checks_lib.rerun_move_probability(a)
                              if a and not a.get('informational') else None),
                 'same' if a and b and a['state'] == b['state'] else '**moved**'])
  return rows


def _probability(p) -> str:
  return '-' if p is None else f'{p:.2f}'


def _counts(checks) -> str:
  deciding = [c for c in checks if not c.get('informational')]
  if not deciding:
    return '-'
  n = {state: sum(c['state'] == state for c in deciding) for state in STATES}
  return f'{n[HOLDS]} / {n[FAILS]} / {n[INCONCLUSIVE]}'


def _top_table(summaries, failures, timings, comparisons) -> list[str]:
  lines = ['| experiment | result | deciding checks: holds / fails / inconclusive | '
           'checks that do not hold (value [interval], threshold: state) | vs recorded | '
           'wall time |', '|---|---|---|---|---|---|']
  for _, s in summaries:
    checks = s.get('checks') or []
    not_holding = [c for c in checks if not c.get('informational') and c['state'] != HOLDS]
    shown = '; '.join(_check_line(c) for c in not_holding[:4])
    if len(not_holding) > 4:
      shown += f'; and {len(not_holding) - 4} more'
    rows = comparisons.get(s['name'])
    moved = ('-' if rows is None else
             f'{sum(r[-1] != "same" for r in rows)} of {len(rows)} moved (a reseed: '
             f'~{sum(float(r[5]) for r in rows if r[5] != "-"):.1f})')
    wall = f'{timings[s["name"]]:.0f} s' if timings and s['name'] in timings else '-'
    lines.append(f'| [{s["title"]}](#{s["name"]}) | {s["verdict"] or "-"} | {_counts(checks)} | '
                 f'{shown or "-"} | {moved} | {wall} |')
  for name, error in (failures or {}).items():
    wall = f'{timings[name]:.0f} s' if timings and name in timings else '-'
    lines.append(f'| {name} | FAILED: {error.strip().splitlines()[-1][:200]} | - | - | - | '
                 f'{wall} |')
  verdicts = [s['verdict'] for _, s in summaries]
  deciding = [c for _, s in summaries for c in s.get('checks') or []
              if not c.get('informational')]
  lines += ['', f'Experiments: {verdicts.count("reproduced")} reproduced, '
            f'{verdicts.count("not reproduced")} not reproduced, '
            f'{verdicts.count("inconclusive")} inconclusive'
            + (f', {len(failures)} failed to run' if failures else '') + '. '
            f'Deciding checks: {sum(c["state"] == HOLDS for c in deciding)} hold, '
            f'{sum(c["state"] == FAILS for c in deciding)} fail, '
            f'{sum(c["state"] == INCONCLUSIVE for c in deciding)} inconclusive. '
            f'Rule: {VERDICT_RULE}.']
  expected, assessed = checks_lib.expected_moves(deciding)
  if assessed:
    lines += ['', f'Noise alone: a rerun with fresh seeds would give about {expected:.1f} of the '
              f'{assessed} interval-decided checks another state (each check\'s probability from '
              'its interval, `common.checks.rerun_move_probability`); "vs recorded" counts the '
              'states that moved against the recorded run, beside that expectation.']
  return lines


def _section(rel, s, timings, comparison) -> list[str]:
  checks = s.get('checks') or []
  lines = ['', f'<a id="{s["name"]}"></a>', f'## {s["title"]}', '',
           f'**Claim.** {s["claim"]}', '', f'**Result: {s["verdict"] or "-"}.**', '']
  if timings and s['name'] in timings:
    lines += [f'Wall time: {timings[s["name"]]:.0f} s.', '']
  if checks:
    lines += markdown_table(
        ['check', 'value [interval]', 'threshold', 'state', 'evidence'],
        [[c['name'], value_text(c), threshold_text(c), state_text(c), c.get('evidence', '-')]
         for c in checks])
  for t in s.get('tables') or []:
    lines += ['', f'**{t["title"]}**', ''] + markdown_table(t['columns'], t['rows'])
    if t.get('note'):
      lines += ['', t['note']]
  if not s.get('tables'):
    scalars = {k: v for k, v in s['numbers'].items() if not isinstance(v, (dict, list))}
    if scalars:
      lines += [''] + markdown_table(['quantity', 'value'], list(scalars.items()))
  if comparison is not None:
    lines += ['', '**Against the recorded results**', ''] + markdown_table(
        ['check', 'recorded value', 'new value', 'recorded state', 'new state',
         'p(a reseed moves it)', 'verdict'], comparison)
    lines += ['', 'p(a reseed moves it): the probability that a rerun with fresh seeds gives the '
              'recorded check another state (normal approximation from its interval, '
              '`common.checks.rerun_move_probability`); their sum is what noise alone moves.']
  lines += ['', f'All numbers: [`{rel}/summary.json`]({rel}/{SUMMARY}).']
  if s.get('notes'):
    lines += ['', s['notes']]
  for fig in s.get('figures', []):
    lines += ['', f'![{fig}]({os.path.join(rel, fig)})']
  return lines


def build_report(root: str, failures: dict[str, str] | None = None,
                 timings: dict[str, float] | None = None,
                 recorded: str | None = None) -> str:
  """Collects every `*/summary.json` under `root` into root/report.md and root/summary.json.

  The top table gives each experiment's verdict, its deciding checks counted as holds / fails /
  inconclusive, the checks that do not hold with their values, and, with `recorded` (a folder of
  recorded results, `results/cpu`), how many checks moved against the recorded run; each section
  its claim, its checks, its result tables, the comparison and figures.
  """
  summaries, failures = [], dict(failures or {})
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if d not in ('checkpoints', 'tensorboard'))
    if SUMMARY in filenames and os.path.abspath(dirpath) != os.path.abspath(root):
      try:
        summaries.append((os.path.relpath(dirpath, root),
                          load_summary(os.path.join(dirpath, SUMMARY))))
      except (SummaryError, ValueError) as e:   # shown as a failure, the others still reported
        failures[os.path.relpath(dirpath, root)] = f'{type(e).__name__}: {e}'

  comparisons = {}
  for _, s in summaries:
    path = os.path.join(recorded, f'{s["name"]}.json') if recorded else None
    if path and os.path.exists(path):
      comparisons[s['name']] = compare_with_recorded(s, load_summary(path))
  lines = ['# Reproduction report', ''] + _top_table(summaries, failures, timings, comparisons)
  if timings:
    lines += ['', f'Total wall time: {sum(timings.values()) / 60:.1f} min.']
  for rel, s in summaries:
    lines += _section(rel, s, timings, comparisons.get(s['name']))
  for name, error in (failures or {}).items():
    lines += ['', f'## {name}: failed', '', '```', error[-3000:], '```']
  path = os.path.join(root, 'report.md')
  with open(path, 'w', encoding='utf-8') as f:
    f.write('\n'.join(lines) + '\n')
  with open(os.path.join(root, SUMMARY), 'w', encoding='utf-8') as f:
    json.dump({'experiments': {s['name']: s for _, s in summaries},
               'failures': failures or {}, 'timings': timings or {},
               'moved': {n: [r for r in rows if r[-1] != 'same']
                         for n, rows in comparisons.items()}}, f, indent=2)
  return path


if __name__ == '__main__':
  import sys  # pylint: disable=g-import-not-at-top
  args = dict(a[2:].split('=', 1) for a in sys.argv[1:] if a.startswith('--') and '=' in a)
  print(build_report(args.get('root', 'runs/cpu'), recorded=args.get('recorded', 'results/cpu')))

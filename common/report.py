"""summary.json for each experiment, and the one report (markdown + figures) that collects them.

A summary states the paper's claim, the numbers measured, whether this run reproduced the claim
(true, false, or null when the run cannot tell), and its figures (paths relative to its workdir).

    python -m common.report --root=runs/cpu     # writes runs/cpu/report.md
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Sequence

import jax

SUMMARY = 'summary.json'


def _jsonable(value):
  if isinstance(value, dict):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if hasattr(value, 'item') and getattr(value, 'ndim', 1) == 0:
    value = value.item()
  if hasattr(value, 'tolist'):
    return value.tolist()
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  return value


class SummaryError(ValueError):
  """A summary that the report could not render as asked (a malformed check or table)."""


def check(name: str, value: Any, threshold: Any, holds: bool, *, informational: bool = False,
          note: str = '') -> dict[str, Any]:
  """One claim check, stated before the run: `value` measured, `threshold` it is held against
  (a number, or a short text such as '<= 0.01' or '[-1.65, -1.35]'), whether it holds.
  Informational checks are shown but do not decide the verdict."""
  if not isinstance(name, str) or not name:
    raise SummaryError(f'A check needs a name; got {name!r}.')
  return {'name': name, 'value': _jsonable(value), 'threshold': _jsonable(threshold),
          'holds': bool(holds), 'informational': bool(informational), 'note': note}


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
          note: str = '') -> dict[str, Any]:
  """A paper's result table as the report renders it (rows x columns chosen by the paper)."""
  columns = [str(c) for c in columns]
  rows = [list(r) for r in rows]
  bad = [i for i, r in enumerate(rows) if len(r) != len(columns)]
  if bad:
    raise SummaryError(f'Table {title!r}: row {bad[0]} has {len(rows[bad[0]])} cells for '
                       f'{len(columns)} columns {columns}.')
  return {'title': title, 'columns': columns, 'rows': _jsonable(rows), 'note': note}


def verdict_from(checks: Sequence[dict[str, Any]]) -> bool | None:
  """True when every deciding check holds; None when there is none."""
  deciding = [c for c in checks if not c.get('informational')]
  return all(c['holds'] for c in deciding) if deciding else None


def make_summary(*, name: str, title: str, claim: str, numbers: dict[str, Any],
                 reproduced: bool | None | str = 'checks', workdir: str,
                 figures: Sequence[str] = (), notes: str = '', config=None,
                 checks: Sequence[dict[str, Any]] | None = None,
                 tables: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
  """Writes workdir/summary.json (process 0) and returns it.

  checks: `check(...)` entries (the report shows "k of n" and names the failed ones);
  reproduced defaults to all deciding checks holding. tables: `table(...)` entries, the paper's
  main results; the full nested `numbers` stay in summary.json.
  """
  checks = list(checks or [])
  for c in checks:
    if not isinstance(c, dict) or not {'name', 'value', 'threshold', 'holds'} <= set(c):
      raise SummaryError(f'{name}: a check must come from report.check(...); got {c!r}.')
  for t in tables:
    if not isinstance(t, dict) or not {'title', 'columns', 'rows'} <= set(t):
      raise SummaryError(f'{name}: a table must come from report.table(...); got {t!r}.')
  if reproduced == 'checks':
    if not checks:
      raise SummaryError(f'{name}: pass checks=[...] or reproduced=True/False/None.')
    reproduced = verdict_from(checks)
  summary = {
      'name': name, 'title': title, 'claim': claim, 'reproduced': reproduced,
      'checks': checks, 'tables': list(tables),
      'numbers': _jsonable(numbers),
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


def _verdict(reproduced) -> str:
  return {True: 'reproduced', False: 'NOT reproduced', None: 'inconclusive'}[reproduced]


def summary_checks(summary: dict[str, Any]) -> list[dict[str, Any]]:
  """The summary's checks as a list; older summaries kept them as numbers['checks'], a dict of
  {name: {'holds': ..., other fields}} (nested for groups), which is read the same way."""
  if summary.get('checks'):
    return list(summary['checks'])
  out = []

  def walk(prefix, entry):
    if isinstance(entry, dict) and 'holds' in entry and not any(
        isinstance(v, dict) and 'holds' in v for v in entry.values()):
      rest = {k: v for k, v in entry.items()
              if k not in ('holds', 'threshold', 'informational', 'note')}
      value = entry.get('value', rest)
      out.append(check(prefix, value, entry.get('threshold'), entry['holds'],
                       informational=bool(entry.get('informational'))))
    elif isinstance(entry, dict):
      for k, v in entry.items():
        if k != 'holds':
          walk(f'{prefix}/{k}' if prefix else k, v)

  walk('', (summary.get('numbers') or {}).get('checks') or {})
  return out


def _check_line(c) -> str:
  threshold = '' if c.get('threshold') is None else f' (threshold {_fmt(c["threshold"])})'
  return f'{c["name"]} = {_fmt(c["value"])}{threshold}'


def _markdown_table(columns, rows) -> list[str]:
  cell = lambda v: _fmt(v).replace('|', '\\|').replace('\n', ' ')
  return (['| ' + ' | '.join(cell(c) for c in columns) + ' |',
           '|' + '---|' * len(columns)] +
          ['| ' + ' | '.join(cell(v) for v in row) + ' |' for row in rows])


def build_report(root: str, failures: dict[str, str] | None = None,
                 timings: dict[str, float] | None = None) -> str:
  """Collects every `*/summary.json` under `root` into root/report.md and root/summary.json.

  The top table gives each experiment's verdict, "k of n checks" and the failed checks with their
  values; each section its claim, its checks, its result tables and figures. The full numbers
  stay in each summary.json.
  """
  summaries = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if d not in ('checkpoints', 'tensorboard'))
    if SUMMARY in filenames and os.path.abspath(dirpath) != os.path.abspath(root):
      with open(os.path.join(dirpath, SUMMARY), encoding='utf-8') as f:
        summaries.append((os.path.relpath(dirpath, root), json.load(f)))
  lines = ['# Reproduction report', '',
           '| experiment | result | checks | failed checks (value, threshold) | wall time |',
           '|---|---|---|---|---|']
  for rel, s in summaries:
    checks = summary_checks(s)
    deciding = [c for c in checks if not c.get('informational')]
    failed = [c for c in deciding if not c['holds']]
    count = f'{len(deciding) - len(failed)} of {len(deciding)}' if deciding else '-'
    shown = '; '.join(_check_line(c) for c in failed[:4])
    if len(failed) > 4:
      shown += f'; and {len(failed) - 4} more'
    wall = f'{timings[s["name"]]:.0f} s' if timings and s['name'] in timings else '-'
    lines.append(f'| [{s["title"]}](#{s["name"]}) | {_verdict(s["reproduced"])} | {count} | '
                 f'{shown or "-"} | {wall} |')
  for name, error in (failures or {}).items():
    wall = f'{timings[name]:.0f} s' if timings and name in timings else '-'
    lines.append(f'| {name} | FAILED: {error.strip().splitlines()[-1][:200]} | - | - | {wall} |')
  if timings:
    lines += ['', f'Total wall time: {sum(timings.values()) / 60:.1f} min.']
  for rel, s in summaries:
    checks = summary_checks(s)
    lines += ['', f'<a id="{s["name"]}"></a>', f'## {s["title"]}', '',
              f'**Claim.** {s["claim"]}', '', f'**Result: {_verdict(s["reproduced"])}.**', '']
    if timings and s['name'] in timings:
      lines += [f'Wall time: {timings[s["name"]]:.0f} s.', '']
    if checks:
      lines += _markdown_table(
          ['check', 'value', 'threshold', 'holds'],
          [[c['name'], c['value'], c.get('threshold'),
            ('yes' if c['holds'] else '**no**') + (' (informational)'
                                                    if c.get('informational') else '')]
           for c in checks])
    for t in s.get('tables') or []:
      lines += ['', f'**{t["title"]}**', ''] + _markdown_table(t['columns'], t['rows'])
      if t.get('note'):
        lines += ['', t['note']]
    if not s.get('tables'):
      scalars = {k: v for k, v in s['numbers'].items()
                 if k != 'checks' and not isinstance(v, (dict, list))}
      if scalars:
        lines += [''] + _markdown_table(['quantity', 'value'], list(scalars.items()))
    lines += ['', f'All numbers: [`{rel}/summary.json`]({rel}/{SUMMARY}).']
    if s.get('notes'):
      lines += ['', s['notes']]
    for fig in s.get('figures', []):
      lines += ['', f'![{fig}]({os.path.join(rel, fig)})']
  for name, error in (failures or {}).items():
    lines += ['', f'## {name}: failed', '', '```', error[-3000:], '```']
  path = os.path.join(root, 'report.md')
  with open(path, 'w', encoding='utf-8') as f:
    f.write('\n'.join(lines) + '\n')
  with open(os.path.join(root, SUMMARY), 'w', encoding='utf-8') as f:
    json.dump({'experiments': {s['name']: s for _, s in summaries},
               'failures': failures or {}, 'timings': timings or {}}, f, indent=2)
  return path


if __name__ == '__main__':
  import sys  # pylint: disable=g-import-not-at-top
  args = [a.split('=', 1)[1] for a in sys.argv[1:] if a.startswith('--root=')]
  print(build_report(args[0] if args else 'runs/cpu'))

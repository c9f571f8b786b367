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


def make_summary(*, name: str, title: str, claim: str, numbers: dict[str, Any],
                 reproduced: bool | None, workdir: str, figures: Sequence[str] = (),
                 notes: str = '', config=None) -> dict[str, Any]:
  """Writes workdir/summary.json (process 0) and returns it."""
  summary = {
      'name': name, 'title': title, 'claim': claim, 'reproduced': reproduced,
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
  if isinstance(value, float):
    return f'{value:.4g}'
  if isinstance(value, dict):
    return ', '.join(f'{k}: {_fmt(v)}' for k, v in value.items())
  return str(value)


def _verdict(reproduced) -> str:
  return {True: 'reproduced', False: 'NOT reproduced', None: 'inconclusive'}[reproduced]


def build_report(root: str, failures: dict[str, str] | None = None,
                 timings: dict[str, float] | None = None) -> str:
  """Collects every `*/summary.json` under `root` into root/report.md and root/summary.json."""
  summaries = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if d not in ('checkpoints', 'tensorboard'))
    if SUMMARY in filenames and os.path.abspath(dirpath) != os.path.abspath(root):
      with open(os.path.join(dirpath, SUMMARY), encoding='utf-8') as f:
        summaries.append((os.path.relpath(dirpath, root), json.load(f)))
  lines = ['# Reproduction report', '',
           '| experiment | claim | result |', '|---|---|---|']
  for rel, s in summaries:
    lines.append(f'| [{s["title"]}](#{s["name"]}) | {s["claim"]} | {_verdict(s["reproduced"])} |')
  for name, error in (failures or {}).items():
    lines.append(f'| {name} | (the run failed) | FAILED: {error.splitlines()[-1][:200]} |')
  for rel, s in summaries:
    lines += ['', f'<a id="{s["name"]}"></a>', f'## {s["title"]}', '',
              f'**Claim.** {s["claim"]}', '', f'**Result: {_verdict(s["reproduced"])}.**', '']
    if timings and s['name'] in timings:
      lines += [f'Wall time: {timings[s["name"]]:.0f} s.', '']
    lines += ['| quantity | value |', '|---|---|']
    lines += [f'| {k} | {_fmt(v)} |' for k, v in s['numbers'].items()]
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
               'failures': failures or {}}, f, indent=2)
  return path


if __name__ == '__main__':
  import sys  # pylint: disable=g-import-not-at-top
  args = [a.split('=', 1)[1] for a in sys.argv[1:] if a.startswith('--root=')]
  print(build_report(args[0] if args else 'runs/cpu'))

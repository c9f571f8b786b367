"""The length-generalisation study: byte-level LMs, one per position encoding (same model, steps,
data order and seed), trained at one length and evaluated at 1x, 2x, 4x, 8x of it.

    python -m fire_pe.main --config=configs/fire_pe/lm.py:cpu --workdir=/tmp/fire_pe

Each encoding trains with the common loop under workdir/models/<encoding>/seed<k> (checkpointed:
a rerun resumes or reuses it). Evaluation: held-out text cut into non-overlapping windows of each
length, the mean next-token loss over the second half of every window (the positions a shorter
training length never reached), over the whole window, and by query-position bucket (rows
0..T/2-1, T/2..T-1, T..2T-1, 2T..4T-1, ... for train length T). An encoding that cannot represent a
length (learned absolute positions past their table) is reported as such, not evaluated.

Diagnostics for the encodings in `config.diagnose` (FIRE): the same weights evaluated with the
normaliser psi(max(L, i)) frozen at row T - 1 (a diagnostic row, not FIRE), and the learned c, L
and f per layer (f's fit by an affine function, its dead units, how much the growing normaliser
shrinks the last row's inputs at each length; a figure of f per head). `config.regime` repeats the
study at longer train lengths for a few encodings (does FIRE's gap close as the train length
approaches the paper's?). `fire_random_positions` trains FIRE with sorted random positions drawn
from 0 .. config.random_positions_factor x T - 1 (an extension; evaluated like FIRE).

The claim checks (thresholds in config.checks) and the 'Diagnosis: ...' tables are read off
intervals over seeds by fire_pe.claims; encodings in config.one_seed (diagnostics outside the
claim) train seed 0 only.
"""

from __future__ import annotations

import math
import os
from typing import Any

from absl import logging
import jax
import ml_collections

from common import config_lib
from common import report
from common.data import loader
from fire_pe import claims
from fire_pe import diagnostics
from fire_pe import encodings
from fire_pe import evaluation
from fire_pe import lm

CLAIM = ('FIRE generalises to sequences longer than those seen in training better than NoPE, '
         'RoPE, ALiBi, Kerple and T5\'s relative bias: at 4x the training length its loss is the '
         'lowest (or within a small margin of it) and below NoPE\'s and RoPE\'s.')
_metric = claims.metric


def regime_config(config, length: int) -> ml_collections.ConfigDict:
  """The study's config at train length `length` for the regime trend: the regime's encodings,
  factors and seeds; with regime.same_tokens the batch shrinks so a step holds the tokens it holds
  at config.train_length (the lengths are validated to divide them)."""
  sub = config.copy_and_resolve_references()
  with sub.unlocked():
    sub.train_length = length
    sub.encodings = tuple(config.regime.encodings)
    sub.checks.contenders = tuple(n for n in config.regime.encodings
                                  if n in config.checks.contenders)
    sub.checks.below = tuple(n for n in config.checks.below if n in config.regime.encodings)
    sub.eval_factors = tuple(config.regime.factors)
    sub.seeds = config.regime.seeds
    if config.regime.get('same_tokens', False):
      sub.loop.batch_size = config.loop.batch_size * config.train_length // length
    sub.diagnose = tuple(n for n in config.diagnose if n in config.regime.encodings)
  return sub


def seeds_of(config, name: str) -> int:
  """How many seeds `name` trains: config.seeds, or 1 for the diagnostics in config.one_seed."""
  return 1 if name in config.get('one_seed', ()) else config.seeds


def _plot(config, table, path):
  plt = report.pyplot()
  fig, ax = plt.subplots(figsize=(6.5, 4.2))
  factors = list(config.eval_factors)
  colours = plt.get_cmap('tab20').colors  # 14 encodings: more than the default 10 colours
  for n, (name, row) in enumerate(table.items()):
    if name.endswith(diagnostics.FROZEN):
      continue
    xs = [f * config.train_length for f in factors if _metric(row, f, config.metric) is not None]
    ys = [_metric(row, f, config.metric) for f in factors
          if _metric(row, f, config.metric) is not None]
    style = '-' if name.startswith('fire') else '--'
    ax.plot(xs, ys, style, marker='o', label=name, color=colours[n % len(colours)],
            lw=2.2 if name in ('fire', 'fire_s') else 1.2)
  ax.set_xscale('log', base=2)
  ax.set_xlabel('evaluation length (tokens)')
  ax.set_ylabel(f'mean token loss ({config.metric.replace("_", " ")} of each window)')
  ax.axvline(config.train_length, color='grey', lw=0.8, ls=':')
  ax.set_title(f'Length generalisation (trained at {config.train_length})')
  ax.legend(fontsize=7, ncol=2)
  return report.save_figure(fig, path, dpi=90)


def _check_checks(config) -> None:
  """config.checks: the claim's encodings are studied, with every seed; the margin a number."""
  c = config.checks
  for field, names in (('encoding', (c.encoding,)), ('contenders', c.contenders),
                       ('below', c.below)):
    for name in names:
      if name not in config.encodings:
        raise config_lib.ConfigError(f'config.checks.{field} names {name!r}, which is not in '
                                     f'config.encodings {list(config.encodings)}.')
      if name in config.get('one_seed', ()):
        raise config_lib.ConfigError(
            f'config.checks.{field} names {name!r}, which config.one_seed trains at one seed: '
            'the claim is decided over seeds; drop it from config.one_seed.')
  if not [n for n in c.contenders if n != c.encoding]:
    raise config_lib.ConfigError(
        f'config.checks.contenders {list(c.contenders)} names no encoding besides '
        f'config.checks.encoding={c.encoding!r}: the claim needs one to compare with.')
  if c.encoding in c.below:
    raise config_lib.ConfigError(f'config.checks.below names the claim encoding {c.encoding!r}.')
  if (isinstance(c.margin, bool) or not isinstance(c.margin, (int, float))
      or not math.isfinite(c.margin) or c.margin < 0):
    raise config_lib.ConfigError(f'config.checks.margin={c.margin!r}: expected a finite number '
                                 '>= 0 (nats).')


def check_config(config: ml_collections.ConfigDict) -> None:
  """Everything that can be wrong with the study's fields, before any compute (no data read)."""
  for name in (*config.encodings, *config.regime.encodings):
    if name not in encodings.ENCODINGS:
      encodings.build(name, num_heads=1, train_length=1)  # raises with the available names
  _check_checks(config)
  for name in config.diagnose:
    if name not in config.encodings or not name.startswith('fire') or name in (
        'fire_no_interpolation', 'fire_no_threshold', 'fire_no_log'):
      raise config_lib.ConfigError(
          f'config.diagnose names {name!r}: it must be one of config.encodings and a FIRE with '
          f'a thresholded, log-transformed normaliser (fire, fire_s, fire_fixed_threshold, '
          f'fire_random_positions).')
  if config.regime.train_lengths and config.checks.encoding not in config.regime.encodings:
    raise config_lib.ConfigError(
        f'config.regime.encodings must include {config.checks.encoding!r} (config.checks.encoding).')
  kind = config.get('train_input', 'memory')
  if kind not in ('memory', 'stream'):
    raise config_lib.ConfigError(f"config.train_input={kind!r}: use 'memory' or 'stream'.")
  for field in ('factors', 'side_factors'):
    missing = [f for f in config.checks[field] if f not in config.eval_factors]
    if missing:
      raise config_lib.ConfigError(f'config.checks.{field} {missing} are not in '
                                   f'config.eval_factors {list(config.eval_factors)}.')
  if config.regime.get('same_tokens', False):
    uneven = [n for n in config.regime.train_lengths
              if (config.loop.batch_size * config.train_length) % n]
    if uneven:
      raise config_lib.ConfigError(
          f'config.regime.same_tokens: the {config.loop.batch_size} x {config.train_length} tokens '
          f'of a step do not divide into whole windows of {uneven}; change the batch or lengths.')
  if config.regime.train_lengths and not config.regime.factors:
    raise config_lib.ConfigError('config.regime.factors is empty: the regime needs a factor.')
  if config.seeds < 1:
    raise config_lib.ConfigError(f'config.seeds={config.seeds}: need at least 1.')
  if config.regime.train_lengths and config.regime.seeds < 1:
    raise config_lib.ConfigError(f'config.regime.seeds={config.regime.seeds}: need at least 1.')
  encodings.check_fire_fields({k: v for k, v in config.fire.items()
                               if k != 'init_threshold_fraction'})
  config_lib.check_loop(config.loop)


def eval_lengths(config) -> list[tuple[int, str]]:
  """(length, what) of every window the evaluation reads: each eval factor x the train length,
  and each regime factor x its train length."""
  out = [(int(f * config.train_length), f'{f}x config.train_length={config.train_length}')
         for f in config.eval_factors]
  out += [(int(f * length), f'{f}x regime train length {length}')
          for length in config.regime.train_lengths for f in config.regime.factors]
  return out


def check_eval_text(config, test_ids) -> None:
  """Raises DatasetError, before any training, when the evaluation text holds no window of the
  longest evaluation length (+1 token for the last target), naming the fields that set it."""
  length, what = max(eval_lengths(config))
  if len(test_ids) >= length + 1:
    return
  cut = (f', read up to config.max_eval_bytes={config.max_eval_bytes}'
         if config.get('max_eval_bytes') is not None else '')
  raise loader.DatasetError(
      f'The evaluation text ({config.dataset!r} split {config.eval_split!r}{cut}) has '
      f'{len(test_ids)} tokens: not one window of the longest evaluation length {length} '
      f'({what}) plus its last target. Lower config.eval_factors (or config.regime.factors) or '
      'config.train_length, raise config.max_eval_bytes, or evaluate on a longer split.')


def _trained_as(config, name: str) -> str:
  """The encoding whose training `name` evaluates: RoPE with position interpolation changes
  evaluation only, so it reuses RoPE's."""
  return 'rope' if name == 'rope_pi' and 'rope' in config.encodings else name


def study(config, workdir: str, train_ids, test_ids) -> dict[str, Any]:
  """Trains config.encodings x config.seeds at config.train_length and evaluates them: the mean
  table (diagnostic rows included), the per-seed rows, and the learned FIRE parameters.

  Of each training only the history stays, and the parameters while a later encoding evaluates
  them again (RoPE's, for rope_pi): no optimizer state or finished model is held on the devices
  while the next encodings train."""
  per_seed: dict[str, list[dict]] = {}
  histories: dict[tuple[str, int], list[dict]] = {}
  held: dict[tuple[str, int], Any] = {}
  learned: dict[str, list[dict]] = {}
  freeze = {'freeze_normaliser_at': float(config.train_length - 1)}
  for index, name in enumerate(config.encodings):
    train_name = _trained_as(config, name)
    later = {_trained_as(config, n) for n in config.encodings[index + 1:]}
    for seed in range(seeds_of(config, name)):
      params = held.pop((train_name, seed), None)
      if params is None:
        model_dir = os.path.join(workdir, 'models', train_name, f'seed{seed}')
        result = lm.train_encoding(config, train_name, seed, train_ids, model_dir)
        params, histories[(train_name, seed)] = result.state.params, result.history
        del result
      per_seed.setdefault(name, []).append(evaluation.evaluate(config, name, params, test_ids))
      if name in config.diagnose:
        per_seed.setdefault(name + diagnostics.FROZEN, []).append(
            evaluation.evaluate(config, name, params, test_ids, fire_overrides=freeze))
        learned.setdefault(name, []).append(diagnostics.learned_fire(config, params))
      if train_name in later:
        held[(train_name, seed)] = params
      del params
    logging.info('%s (train length %d): %s', name, config.train_length, per_seed[name])
  table = {}
  for name, rows in per_seed.items():
    table[name] = evaluation.mean_row(rows, config.eval_factors)
    base = name[:-len(diagnostics.FROZEN)] if name.endswith(diagnostics.FROZEN) else name
    history = histories[(_trained_as(config, base), 0)]
    table[name]['final_train_loss'] = round(
        float([r for r in history if 'loss' in r][-1]['loss']), 4)
  return {'table': table, 'per_seed': per_seed, 'learned': learned}


def _cell(row, factor, key):
  value = _metric(row, factor, key)
  std = row.get(factor, {}).get(f'{key}_std') if isinstance(row.get(factor), dict) else None
  if value is None or std is None:
    return value
  return f'{value:.3f} ± {std:.3f}'


def _label(config, name):
  base = name[:-len(diagnostics.FROZEN)] if name.endswith(diagnostics.FROZEN) else name
  one = ' (1 seed)' if config.seeds > 1 and seeds_of(config, base) == 1 else ''
  if name.endswith(diagnostics.FROZEN):
    return f'{base}, normaliser frozen at row T-1 (diagnostic, not FIRE){one}'
  return name + one


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  check_config(config)
  os.makedirs(workdir, exist_ok=True)
  train_ids = None
  if config.get('train_input', 'memory') == 'memory':
    train_ids = loader.load_text(config.dataset, config.train_split, data_dir=config.get('data_dir'),
                                 max_bytes=config.get('max_train_bytes'))
  else:  # opened here so that a dataset not prepared as array_record stops before anything runs
    lm.train_source(config)
  test_ids = loader.load_text(config.dataset, config.eval_split, data_dir=config.get('data_dir'),
                              max_bytes=config.get('max_eval_bytes'))
  check_eval_text(config, test_ids)
  main = study(config, workdir, train_ids, test_ids)
  table = main['table']
  gaps = claims.claim_gaps(config, main['per_seed'], config.checks.factors)
  side = claims.claim_gaps(config, main['per_seed'], config.checks.side_factors)
  # The regime trend: the same study at longer train lengths, a few encodings.
  regime_tables = {config.train_length: table}
  regime_per_seed = {config.train_length: main['per_seed']}
  regime_learned = {config.train_length: main['learned']}
  for length in config.regime.train_lengths:
    result = study(regime_config(config, length), os.path.join(workdir, f'regime_{length}'),
                   train_ids, test_ids)
    regime_tables[length] = result['table']
    regime_per_seed[length] = result['per_seed']
    regime_learned[length] = result['learned']
  regime = (claims.regime_gaps(config, regime_per_seed) if config.regime.train_lengths else {})
  figures = []
  if jax.process_index() == 0:
    figures.append(_plot(config, table, os.path.join(workdir, 'loss_vs_length.png')))
    if main['learned']:
      figures.append(diagnostics.plot_f({n: v[0] for n, v in main['learned'].items()},
                             os.path.join(workdir, 'fire_f.png')))
  cc = config.checks
  one = [n for n in config.encodings if seeds_of(config, n) == 1]
  notes = (f'Byte-level LM ({config.model.num_layers} layers, d {config.model.d_model}, '
           f'{config.model.num_heads} heads) on {config.dataset}, trained at length '
           f'{config.train_length} for {config.loop.total_steps} steps, {config.seeds} seed(s)'
           + (f' ({", ".join(one)}: one, a diagnostic outside the claim)'
              if one and config.seeds > 1 else '') + '. '
           f'Metric: mean next-token loss over the {config.metric.replace("_", " ")} of each '
           f'held-out window. The claim at a factor, per seed s: {cc.encoding}_s minus the best '
           f'of {[n for n in cc.contenders if n != cc.encoding]} at seed s (chosen per seed) '
           f'<= {cc.margin}, and {cc.encoding}_s minus X_s < 0 for X in {list(cc.below)} '
           '(paired by seed); each decided by its 95% Student-t interval over seeds (one seed: '
           f'inconclusive). The paper evaluates at up to 4x its train length, so '
           f'{list(cc.factors)}x decide and {list(cc.side_factors)}x are reported beside them. '
           f'FIRE\'s threshold starts at {config.fire.init_threshold_fraction} x the train length '
           f'(the paper: 512 at 2048). Rows named *{diagnostics.FROZEN} are a diagnostic (the same '
           'FIRE weights with the normaliser psi(max(L, i)) frozen at row T-1), not an encoding.')
  learned_numbers = lambda learned: {
      name: [{layer: {k: v for k, v in d.items() if k != 'f'} for layer, d in per.items()}
             for per in rows] for name, rows in learned.items()}
  numbers = {
      'losses': {name: {str(k): v for k, v in row.items()} for name, row in table.items()},
      'per_seed': {name: [{str(k): v for k, v in r.items()} for r in rows]
                   for name, rows in main['per_seed'].items()},
      'learned_fire': learned_numbers(main['learned']),
      'learned_f': {name: rows[0] for name, rows in main['learned'].items()},
      'gaps': {f'{f}x': g for f, g in gaps.items()},
      'side_gaps': {f'{f}x': g for f, g in side.items()},
      'regime': {str(length): {
          'gaps': {f'{f}x': g for f, g in regime[length].items()},
          'losses': {name: {str(k): v for k, v in row.items()}
                     for name, row in regime_tables[length].items()},
          'learned_fire': learned_numbers(regime_learned[length])} for length in regime}}
  check_list = claims.claim_checks(config, gaps)
  check_list += claims.claim_checks(config, side, informational=True,
                                    label=' (beside the paper\'s range)')
  if config.regime.train_lengths:
    check_list.append(claims.regime_check(config, regime))
  factors = list(config.eval_factors)
  key = config.metric
  tables = [report.table(
      f'Held-out loss ({key.replace("_", " ")} of each window) by evaluation length'
      + (f', mean ± std over {config.seeds} seeds' if config.seeds > 1 else ''),
      ['encoding'] + [f'{f * config.train_length} ({f}x)' for f in factors] + ['final train loss'],
      [[_label(config, name)] + [_cell(row, f, key) for f in factors] + [row['final_train_loss']]
       for name, row in table.items()])]
  diagnosis = claims.diagnosis_table(config, main['per_seed'], main['learned'])
  if diagnosis is not None:
    tables.append(diagnosis)
  if config.regime.train_lengths:
    tables.append(claims.regime_table(config, regime_per_seed, regime_learned))
  bucket_rows = []
  for name, row in table.items():
    if name in config.diagnose or name.endswith(diagnostics.FROZEN) or name in config.bucket_table:
      for f in factors:
        if isinstance(row.get(f), dict):
          bucket_rows.append([_label(config, name), f * config.train_length,
                              ', '.join(f'{b}: {v:.3f}' for b, v in row[f]['buckets'].items())])
  if bucket_rows:
    tables.append(report.table('Loss by query-position bucket (rows of each window)',
                               ['encoding', 'length', 'loss by rows'], bucket_rows))
  learned_rows = [[name, layer, d['c'], d['threshold'], min(d['affine_r2']), d['dead_units'],
                   ', '.join(f'{f}x {v}' for f, v in d['normaliser_scale'].items())]
                  for name, rows in main['learned'].items() for layer, d in rows[0].items()]
  if learned_rows:
    tables.append(report.table(
        'Learned FIRE (seed 0): c, L, f\'s affine fit (min R^2 over heads), dead hidden units '
        'on [0, 1] per layer, and psi(max(L, T-1)) / psi(max(L, N-1)) (the last row\'s shrink)',
        ['encoding', 'layer', 'c', 'L', 'min R^2', 'dead units', 'normaliser scale'],
        learned_rows))
  if config.regime.train_lengths:
    rows = []
    for length in sorted(regime_tables):
      for name in config.regime.encodings:
        row = regime_tables[length].get(name)
        if row is not None:
          rows.append([length, name] + [_cell(row, f, key) for f in config.regime.factors])
    tables.append(report.table(
        f'Regime: train length against loss at {list(config.regime.factors)}x',
        ['train length', 'encoding'] + [f'{f}x' for f in config.regime.factors], rows))
  return report.make_summary(
      name='fire_pe', title='FIRE: length generalisation of position encodings', claim=CLAIM,
      numbers=numbers, checks=check_list, tables=tables, workdir=workdir, figures=figures,
      notes=notes, config=config)

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
"""

from __future__ import annotations

import os
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from common import config_lib
from common import report
from common import train as train_lib
from common.data import loader
from common.data import pipeline
from common.data import stream
from common.models import transformer
from fire_pe import encodings

CLAIM = ('FIRE generalises to sequences longer than those seen in training better than NoPE, '
         'RoPE, ALiBi, Kerple and T5\'s relative bias: at 4x and 8x the training length its loss '
         'is the lowest (or within a small margin of it) and below NoPE\'s and RoPE\'s.')
NOT_REPRESENTABLE = 'not representable'


def windows(ids: np.ndarray, length: int, max_windows: int | None = None) -> np.ndarray:
  """Non-overlapping (N, length) windows of a token stream."""
  count = len(ids) // length
  if max_windows is not None:
    count = min(count, max_windows)
  if count == 0:
    raise loader.DatasetError(f'The text has {len(ids)} tokens: not one window of {length}.')
  return ids[:count * length].reshape(count, length)


def make_model(config: ml_collections.ConfigDict, name: str, *, attention: str | None = None,
               fire_overrides: dict[str, Any] | None = None):
  m = config.model
  fire = dict(config.fire.to_dict())
  fraction = fire.pop('init_threshold_fraction')
  fire['init_threshold'] = float(fraction * config.train_length)
  fire.update(fire_overrides or {})
  fields = encodings.build(name, num_heads=m.num_heads, train_length=config.train_length,
                           fire=fire)
  return transformer.TransformerLM(
      vocab_size=loader.BYTE_VOCAB_SIZE, num_layers=m.num_layers, d_model=m.d_model,
      num_heads=m.num_heads, mlp_dim=m.mlp_dim, attention=attention or m.attention,
      block_size=m.block_size, **fields)


def lm_loss(logits, targets, weights=None):
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  if weights is None:
    return jnp.mean(losses)
  return jnp.sum(losses * weights) / jnp.sum(weights)


def train_iterator(config, seed: int, train_ids: np.ndarray | None):
  """Windows of the in-memory corpus, or (config.train_input='stream') rows packed on demand from
  a TFDS text dataset's documents, for corpora larger than a host (c4)."""
  if config.get('train_input', 'memory') == 'stream':
    documents = stream.tfds_source(config.dataset, config.train_split,
                                   data_dir=config.get('data_dir'))
    rows = stream.TextRows(documents, config.train_length, config.docs_per_row)
    return stream.StreamIterator(rows, config.loop.batch_size, seed=seed)
  data = {'tokens': windows(train_ids, config.train_length + 1)}
  return pipeline.BatchIterator(data, config.loop.batch_size, seed=seed)


def train_encoding(config, name: str, seed: int, train_ids: np.ndarray | None, workdir: str):
  model = make_model(config, name)
  loop = config.loop.copy_and_resolve_references()
  with loop.unlocked():
    loop.seed = seed
  sample = jnp.zeros((1, config.train_length), jnp.int32)
  init_fn = lambda rng: model.init(rng, sample)

  randomised = name in encodings.RANDOM_POSITIONS
  max_position = config.random_positions_factor * config.train_length

  def loss_fn(params, model_state, batch, rng):
    tokens = batch['tokens']
    if randomised:   # one sorted draw per step, shared by the batch and the layers
      positions = encodings.random_positions(rng, config.train_length, max_position)
      with encodings.training_positions(positions):
        logits = model.apply({'params': params}, tokens[:, :-1])
    else:
      logits = model.apply({'params': params}, tokens[:, :-1])
    return lm_loss(logits, tokens[:, 1:], batch.get('weights')), ({}, model_state)

  train_iter = train_iterator(config, seed, train_ids)
  # The model is defined outside the loop config: what determines it joins the run's identity.
  identity = {'encoding': name, 'model': config.model.to_dict(), 'fire': config.fire.to_dict(),
              'train_length': config.train_length}
  if randomised:
    identity['random_positions_factor'] = config.random_positions_factor
  result = train_lib.train(loop, workdir, init_fn=init_fn, loss_fn=loss_fn, train_iter=train_iter,
                           identity=identity)
  return result


def query_buckets(train_length: int, length: int) -> list[tuple[int, int]]:
  """Query rows [start, end) by position: 0..T/2-1, T/2..T-1, then doublings T..2T-1, ... up to
  the window's length (T the train length)."""
  edges = [0, train_length // 2, train_length]
  while edges[-1] < length:
    edges.append(edges[-1] * 2)
  edges = sorted({min(e, length) for e in edges})
  return [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def bucket_name(bucket: tuple[int, int]) -> str:
  return f'{bucket[0]}-{bucket[1] - 1}'


def evaluate(config, name: str, params, test_ids: np.ndarray, *,
             fire_overrides: dict[str, Any] | None = None) -> dict[str, Any]:
  """{factor: {'second_half', 'all', 'buckets': {rows: loss}, 'windows'} or NOT_REPRESENTABLE}
  for every eval factor; `fire_overrides` changes FIRE's fields for evaluation (diagnostics)."""
  model = make_model(config, name, attention=config.eval_attention, fire_overrides=fire_overrides)
  out = {}
  for factor in config.eval_factors:
    length = int(factor * config.train_length)
    try:
      jax.eval_shape(model.apply, {'params': params}, jax.ShapeDtypeStruct((1, length), jnp.int32))
    except transformer.SequenceTooLongError:
      out[factor] = NOT_REPRESENTABLE
      continue
    data = windows(test_ids, length + 1, max(1, config.eval_tokens // length))
    apply = jax.jit(lambda p, t: model.apply({'params': p}, t))
    row_sums, n = np.zeros(length, np.float64), 0
    for start in range(0, len(data), config.eval_batch_size):
      batch = jnp.asarray(data[start:start + config.eval_batch_size])
      logits = apply(params, batch[:, :-1])
      losses = np.asarray(optax.softmax_cross_entropy_with_integer_labels(logits, batch[:, 1:]))
      row_sums += losses.sum(axis=0)
      n += len(batch)
    row_means = row_sums / n                                   # mean loss at each query row
    out[factor] = {
        'second_half': float(row_means[length // 2:].mean()), 'all': float(row_means.mean()),
        'buckets': {bucket_name(b): float(row_means[b[0]:b[1]].mean())
                    for b in query_buckets(config.train_length, length)},
        'windows': n}
  return out


def _affine_r2(x, y):
  """R^2 of the least-squares affine fit of y(x) (1 when y is constant)."""
  design = np.stack([x, np.ones_like(x)], axis=1)
  residual = y - design @ np.linalg.lstsq(design, y, rcond=None)[0]
  total = ((y - y.mean()) ** 2).sum()
  return 1.0 if total < 1e-12 else float(1.0 - (residual ** 2).sum() / total)


def learned_fire(config, params) -> dict[str, Any]:
  """FIRE's learned c, L and f per layer (or the shared module): f on a grid of [0, 1] per head,
  its affine fit's R^2 per head, its hidden units dead on all of [0, 1], and the factor by which
  the growing normaliser shrinks the last row's inputs at each eval length, psi(max(L, T-1)) /
  psi(max(L, N-1)) (1 at the train length)."""
  modules = ({'shared': params['position']} if 'position' in params else
             {name: p['position'] for name, p in sorted(params.items())
              if isinstance(p, dict) and 'position' in p})
  fraction = config.fire.init_threshold_fraction
  init_threshold = fraction * config.train_length
  grid = np.linspace(0.0, 1.0, 101)
  out = {}
  for name, p in modules.items():
    depth = sum(1 for k in p if k.startswith('w')) - 1
    mlp = [(np.asarray(p[f'w{n}'], np.float64), np.asarray(p[f'b{n}'], np.float64))
           for n in range(depth + 1)]
    h, dead = grid[:, None], []
    for w, b in mlp[:-1]:
      h = np.maximum(h @ w + b, 0.0)
      dead.append(int(((h > 0).sum(axis=0) == 0).sum()))
    f = h @ mlp[-1][0] + mlp[-1][1]                            # (grid, H)
    c = abs(float(p['c']))
    threshold = abs(float(p.get('threshold_mult', 1.0)) * init_threshold)
    psi = lambda pos: np.log1p(c * max(threshold, pos))
    out[name] = {
        'c': round(c, 4), 'threshold': round(threshold, 2),
        'affine_r2': [round(_affine_r2(grid, f[:, k]), 5) for k in range(f.shape[1])],
        'dead_units': dead,
        'normaliser_scale': {str(factor): round(float(psi(config.train_length - 1)
                                                      / psi(factor * config.train_length - 1)), 3)
                             for factor in config.eval_factors},
        'f': {'x': grid.round(3).tolist(), 'heads': f.T.round(4).tolist()}}
  return out


def _plot_f(learned: dict[str, dict], path: str):
  """f per head for each diagnosed encoding's layers (one panel per layer)."""
  plt = report.pyplot()
  panels = [(enc, layer, d) for enc, layers in learned.items() for layer, d in layers.items()]
  fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.0), squeeze=False)
  for ax, (enc, layer, d) in zip(axes[0], panels):
    for k, ys in enumerate(d['f']['heads']):
      ax.plot(d['f']['x'], ys, label=f'head {k} (R^2 {d["affine_r2"][k]:.3f})')
    ax.set_title(f'{enc} {layer}: c {d["c"]:.2f}, L {d["threshold"]:.0f}', fontsize=8)
    ax.set_xlabel('input psi(i-j) / psi(max(L, i))')
    ax.legend(fontsize=6)
  axes[0][0].set_ylabel('learned f (bias)')
  return report.save_figure(fig, path, dpi=90)


def _metric(row, factor, key):
  value = row.get(factor)
  return value[key] if isinstance(value, dict) else None


def regime_config(config, length: int) -> ml_collections.ConfigDict:
  """The study's config at train length `length` for the regime trend: the regime's encodings,
  factors and seeds; with regime.same_tokens the batch shrinks so a step holds the tokens it holds
  at config.train_length (the lengths are validated to divide them)."""
  sub = config.copy_and_resolve_references()
  with sub.unlocked():
    sub.train_length = length
    sub.encodings = tuple(config.regime.encodings)
    sub.claim_contenders = tuple(n for n in config.regime.encodings
                                 if n in config.claim_contenders)
    sub.eval_factors = tuple(config.regime.factors)
    sub.seeds = config.regime.seeds
    if config.regime.get('same_tokens', False):
      sub.loop.batch_size = config.loop.batch_size * config.train_length // length
    sub.diagnose = tuple(n for n in config.diagnose if n in config.regime.encodings)
  return sub


def check_claim(config, table: dict[str, dict], factors=None) -> dict[str, Any]:
  """FIRE at every long factor: lowest or within the margin of the lowest; below NoPE and RoPE."""
  key, margin, checks = config.metric, config.claim_margin, {}
  for factor in (config.claim_factors if factors is None else factors):
    values = {name: _metric(row, factor, key) for name, row in table.items()}
    values = {name: v for name, v in values.items() if v is not None}
    contenders = {n: v for n, v in values.items() if n in config.claim_contenders}
    best_name = min(contenders, key=contenders.get)
    fire = values[config.claim_encoding]
    beats = {other: values.get(other) for other in ('nope', 'rope') if other in values}
    holds = (fire <= contenders[best_name] + margin
             and all(fire < v for v in beats.values()))
    checks[f'{factor}x'] = {
        'fire': round(fire, 4), 'best': best_name, 'best_loss': round(contenders[best_name], 4),
        'fire_minus_best': round(fire - contenders[best_name], 4),
        **{f'{other}_loss': round(v, 4) for other, v in beats.items()}, 'holds': bool(holds)}
  return checks


def _plot(config, table, path):
  plt = report.pyplot()
  fig, ax = plt.subplots(figsize=(6.5, 4.2))
  factors = list(config.eval_factors)
  colours = plt.get_cmap('tab20').colors  # 14 encodings: more than the default 10 colours
  for n, (name, row) in enumerate(table.items()):
    if name.endswith(FROZEN):
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


FROZEN = '_frozen_normaliser'   # suffix of a diagnostic row (a FIRE encoding's name before it)


def _validate(config):
  for name in (*config.encodings, *config.regime.encodings):
    if name not in encodings.ENCODINGS:
      encodings.build(name, num_heads=1, train_length=1)  # raises with the available names
  for name in (config.claim_encoding, *config.claim_contenders):
    if name not in config.encodings:
      raise config_lib.ConfigError(f'Claim encoding {name!r} is not in config.encodings '
                                   f'{list(config.encodings)}.')
  for name in config.diagnose:
    if name not in config.encodings or not name.startswith('fire') or name in (
        'fire_no_interpolation', 'fire_no_threshold', 'fire_no_log'):
      raise config_lib.ConfigError(
          f'config.diagnose names {name!r}: it must be one of config.encodings and a FIRE with '
          f'a thresholded, log-transformed normaliser (fire, fire_s, fire_fixed_threshold, '
          f'fire_random_positions).')
  if config.regime.train_lengths and config.claim_encoding not in config.regime.encodings:
    raise config_lib.ConfigError(f'config.regime.encodings must include {config.claim_encoding!r}.')
  kind = config.get('train_input', 'memory')
  if kind not in ('memory', 'stream'):
    raise config_lib.ConfigError(f"config.train_input={kind!r}: use 'memory' or 'stream'.")
  for field in ('claim_factors', 'side_factors'):
    missing = [f for f in config[field] if f not in config.eval_factors]
    if missing:
      raise config_lib.ConfigError(f'config.{field} {missing} are not in config.eval_factors '
                                   f'{list(config.eval_factors)}.')
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


def _mean_row(rows: list[dict], factors) -> dict[str, Any]:
  """The seeds' mean (and, with several seeds, the standard deviation) of each metric."""
  out = {}
  for factor in factors:
    if any(r[factor] == NOT_REPRESENTABLE for r in rows):
      out[factor] = NOT_REPRESENTABLE
      continue
    cell = {k: round(float(np.mean([r[factor][k] for r in rows])), 4)
            for k in ('second_half', 'all')}
    if len(rows) > 1:
      cell['second_half_std'] = round(float(np.std([r[factor]['second_half'] for r in rows])), 4)
    cell['buckets'] = {b: round(float(np.mean([r[factor]['buckets'][b] for r in rows])), 4)
                       for b in rows[0][factor]['buckets']}
    out[factor] = cell
  return out


def study(config, workdir: str, train_ids, test_ids) -> dict[str, Any]:
  """Trains config.encodings x config.seeds at config.train_length and evaluates them: the mean
  table (diagnostic rows included), the per-seed rows, and the learned FIRE parameters."""
  per_seed: dict[str, list[dict]] = {}
  trained: dict[tuple[str, int], Any] = {}
  learned: dict[str, list[dict]] = {}
  freeze = {'freeze_normaliser_at': float(config.train_length - 1)}
  for name in config.encodings:
    # RoPE with position interpolation changes evaluation only: it reuses RoPE's training.
    train_name = 'rope' if name == 'rope_pi' and 'rope' in config.encodings else name
    for seed in range(config.seeds):
      if (train_name, seed) not in trained:
        model_dir = os.path.join(workdir, 'models', train_name, f'seed{seed}')
        trained[(train_name, seed)] = train_encoding(config, train_name, seed, train_ids,
                                                     model_dir)
      params = trained[(train_name, seed)].state.params
      per_seed.setdefault(name, []).append(evaluate(config, name, params, test_ids))
      if name in config.diagnose:
        per_seed.setdefault(name + FROZEN, []).append(
            evaluate(config, name, params, test_ids, fire_overrides=freeze))
        learned.setdefault(name, []).append(learned_fire(config, params))
    logging.info('%s (train length %d): %s', name, config.train_length, per_seed[name])
  table = {}
  for name, rows in per_seed.items():
    table[name] = _mean_row(rows, config.eval_factors)
    base = name[:-len(FROZEN)] if name.endswith(FROZEN) else name
    first = trained[('rope' if base == 'rope_pi' and 'rope' in config.encodings else base, 0)]
    table[name]['final_train_loss'] = round(
        float([r for r in first.history if 'loss' in r][-1]['loss']), 4)
  return {'table': table, 'per_seed': per_seed, 'learned': learned}


def _cell(row, factor, key):
  value = _metric(row, factor, key)
  std = row.get(factor, {}).get(f'{key}_std') if isinstance(row.get(factor), dict) else None
  if value is None or std is None:
    return value
  return f'{value:.3f} ± {std:.3f}'


def _label(name):
  if name.endswith(FROZEN):
    return f'{name[:-len(FROZEN)]}, normaliser frozen at row T-1 (diagnostic, not FIRE)'
  return name


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  os.makedirs(workdir, exist_ok=True)
  _validate(config)
  train_ids = None
  if config.get('train_input', 'memory') == 'memory':
    train_ids = loader.load_text(config.dataset, config.train_split, data_dir=config.get('data_dir'),
                                 max_bytes=config.get('max_train_bytes'))
  test_ids = loader.load_text(config.dataset, config.eval_split, data_dir=config.get('data_dir'),
                              max_bytes=config.get('max_eval_bytes'))
  main = study(config, workdir, train_ids, test_ids)
  table = main['table']
  checks = check_claim(config, table)
  side = check_claim(config, table, config.side_factors)
  # The regime trend: the same study at longer train lengths, a few encodings.
  base = regime_config(config, config.train_length)   # the same contenders at every length
  regime = {config.train_length: check_claim(
      base, {n: table[n] for n in config.regime.encodings if n in table},
      config.regime.factors)} if config.regime.train_lengths else {}
  regime_tables = {config.train_length: table}
  regime_learned = {}
  for length in config.regime.train_lengths:
    sub = regime_config(config, length)
    result = study(sub, os.path.join(workdir, f'regime_{length}'), train_ids, test_ids)
    regime_tables[length] = result['table']
    regime_learned[length] = result['learned']
    regime[length] = check_claim(sub, result['table'], config.regime.factors)
  figures = []
  if jax.process_index() == 0:
    figures.append(_plot(config, table, os.path.join(workdir, 'loss_vs_length.png')))
    if main['learned']:
      figures.append(_plot_f({n: v[0] for n, v in main['learned'].items()},
                             os.path.join(workdir, 'fire_f.png')))
  notes = (f'Byte-level LM ({config.model.num_layers} layers, d {config.model.d_model}, '
           f'{config.model.num_heads} heads) on {config.dataset}, trained at length '
           f'{config.train_length} for {config.loop.total_steps} steps, {config.seeds} seed(s). '
           f'Metric: mean next-token loss over the {config.metric.replace("_", " ")} of each '
           f'held-out window. The claim holds at a factor when {config.claim_encoding} is within '
           f'{config.claim_margin} of the best of {list(config.claim_contenders)} and below NoPE '
           f'and RoPE; the paper evaluates at up to 4x its train length, so 4x decides and '
           f'{list(config.side_factors)}x are reported beside it. FIRE\'s threshold starts at '
           f'{config.fire.init_threshold_fraction} x the train length (the paper: 512 at 2048). '
           f'Rows named *{FROZEN} are a diagnostic (the same FIRE weights with the normaliser '
           'psi(max(L, i)) frozen at row T-1), not an encoding.')
  numbers = {
      'losses': {name: {str(k): v for k, v in row.items()} for name, row in table.items()},
      'per_seed': {name: [{str(k): v for k, v in r.items()} for r in rows]
                   for name, rows in main['per_seed'].items()},
      'learned_fire': {name: [{layer: {k: v for k, v in d.items() if k != 'f'}
                               for layer, d in per.items()} for per in rows]
                       for name, rows in main['learned'].items()},
      'learned_f': {name: rows[0] for name, rows in main['learned'].items()},
      'checks': checks, 'side_checks': side,
      'regime': {str(length): {'checks': c, 'losses': {
          name: {str(k): v for k, v in row.items()} for name, row in regime_tables[length].items()},
          'learned_fire': {name: [{layer: {k: v for k, v in d.items() if k != 'f'}
                                   for layer, d in per.items()} for per in rows]
                           for name, rows in regime_learned.get(length, {}).items()}}
          for length, c in regime.items()}}
  check_list = [report.check(
      f'{factor}: {config.claim_encoding} minus the best of the contenders ({c["best"]})',
      c['fire_minus_best'], f'<= {config.claim_margin}, and below NoPE and RoPE', c['holds'])
      for factor, c in checks.items()]
  check_list += [report.check(
      f'{factor} (beside the paper\'s range): {config.claim_encoding} minus the best ({c["best"]})',
      c['fire_minus_best'], f'<= {config.claim_margin}, and below NoPE and RoPE', c['holds'],
      informational=True) for factor, c in side.items()]
  if config.regime.train_lengths:
    gaps = {length: c[f'{max(config.regime.factors)}x']['fire_minus_best']
            for length, c in regime.items()}
    lengths = sorted(gaps)
    check_list.append(report.check(
        f'regime: FIRE minus the best at {max(config.regime.factors)}x by train length '
        f'{lengths}', [gaps[n] for n in lengths], 'the gap shrinks with the train length',
        gaps[lengths[-1]] < gaps[lengths[0]], informational=True,
        note='the paper trains at 2048; does the gap close as the train length grows?'))
  factors = list(config.eval_factors)
  key = config.metric
  tables = [report.table(
      f'Held-out loss ({key.replace("_", " ")} of each window) by evaluation length'
      + (f', mean ± std over {config.seeds} seeds' if config.seeds > 1 else ''),
      ['encoding'] + [f'{f * config.train_length} ({f}x)' for f in factors] + ['final train loss'],
      [[_label(name)] + [_cell(row, f, key) for f in factors] + [row['final_train_loss']]
       for name, row in table.items()])]
  bucket_rows = []
  for name, row in table.items():
    if name in config.diagnose or name.endswith(FROZEN) or name in config.bucket_table:
      for f in factors:
        if isinstance(row.get(f), dict):
          bucket_rows.append([_label(name), f * config.train_length,
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

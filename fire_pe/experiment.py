"""The length-generalisation study: byte-level LMs, one per position encoding (same model, steps,
data order and seed), trained at one length and evaluated at 1x, 2x, 4x, 8x of it.

    python -m fire_pe.main --config=configs/fire_pe/lm.py:cpu --workdir=/tmp/fire_pe

Each encoding trains with the common loop under workdir/models/<encoding>/seed<k> (checkpointed:
a rerun resumes or reuses it). Evaluation: held-out text cut into non-overlapping windows of each
length, the mean next-token loss over the second half of every window (the positions a shorter
training length never reached) and over the whole window. An encoding that cannot represent a
length (learned absolute positions past their table) is reported as such, not evaluated.
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


def make_model(config: ml_collections.ConfigDict, name: str, *, attention: str | None = None):
  m = config.model
  fire = dict(config.fire.to_dict())
  fraction = fire.pop('init_threshold_fraction')
  fire['init_threshold'] = float(fraction * config.train_length)
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

  def loss_fn(params, model_state, batch, rng):
    del rng
    tokens = batch['tokens']
    logits = model.apply({'params': params}, tokens[:, :-1])
    return lm_loss(logits, tokens[:, 1:], batch.get('weights')), ({}, model_state)

  train_iter = train_iterator(config, seed, train_ids)
  # The model is defined outside the loop config: what determines it joins the run's identity.
  identity = {'encoding': name, 'model': config.model.to_dict(), 'fire': config.fire.to_dict(),
              'train_length': config.train_length}
  result = train_lib.train(loop, workdir, init_fn=init_fn, loss_fn=loss_fn, train_iter=train_iter,
                           identity=identity)
  return result


def evaluate(config, name: str, params, test_ids: np.ndarray) -> dict[str, Any]:
  """{length: {'second_half': loss, 'all': loss} or NOT_REPRESENTABLE} for every eval length."""
  model = make_model(config, name, attention=config.eval_attention)
  out = {}
  for factor in config.eval_factors:
    length = int(factor * config.train_length)
    try:
      model.apply({'params': params}, jnp.zeros((1, length), jnp.int32))
    except transformer.SequenceTooLongError:
      out[factor] = NOT_REPRESENTABLE
      continue
    data = windows(test_ids, length + 1, max(1, config.eval_tokens // length))
    apply = jax.jit(lambda p, t: model.apply({'params': p}, t))
    weights = np.zeros(length, np.float32)
    weights[length // 2:] = 1.0
    half, full, n = 0.0, 0.0, 0
    for start in range(0, len(data), config.eval_batch_size):
      batch = jnp.asarray(data[start:start + config.eval_batch_size])
      logits = apply(params, batch[:, :-1])
      losses = np.asarray(optax.softmax_cross_entropy_with_integer_labels(logits, batch[:, 1:]))
      half += losses[:, length // 2:].sum()
      full += losses.sum()
      n += len(batch)
    out[factor] = {'second_half': float(half / (n * (length - length // 2))),
                   'all': float(full / (n * length)), 'windows': n}
  return out


def _metric(row, factor, key):
  value = row.get(factor)
  return value[key] if isinstance(value, dict) else None


def check_claim(config, table: dict[str, dict]) -> dict[str, Any]:
  """FIRE at every long factor: lowest or within the margin of the lowest; below NoPE and RoPE."""
  key, margin, checks = config.metric, config.claim_margin, {}
  for factor in config.claim_factors:
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


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  os.makedirs(workdir, exist_ok=True)
  for name in config.encodings:
    if name not in encodings.ENCODINGS:
      encodings.build(name, num_heads=1, train_length=1)  # raises with the available names
  for name in (config.claim_encoding, *config.claim_contenders):
    if name not in config.encodings:
      raise config_lib.ConfigError(f'Claim encoding {name!r} is not in config.encodings '
                                   f'{list(config.encodings)}.')
  kind = config.get('train_input', 'memory')
  if kind not in ('memory', 'stream'):
    raise config_lib.ConfigError(f"config.train_input={kind!r}: use 'memory' or 'stream'.")
  train_ids = None
  if kind == 'memory':
    train_ids = loader.load_text(config.dataset, config.train_split, data_dir=config.get('data_dir'),
                                 max_bytes=config.get('max_train_bytes'))
  test_ids = loader.load_text(config.dataset, config.eval_split, data_dir=config.get('data_dir'),
                              max_bytes=config.get('max_eval_bytes'))
  per_seed: dict[str, list[dict]] = {}
  trained: dict[tuple[str, int], Any] = {}
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
    logging.info('%s: %s', name, per_seed[name])
  table = {}
  for name, rows in per_seed.items():
    table[name] = {}
    for factor in config.eval_factors:
      if any(r[factor] == NOT_REPRESENTABLE for r in rows):
        table[name][factor] = NOT_REPRESENTABLE
        continue
      table[name][factor] = {k: round(float(np.mean([r[factor][k] for r in rows])), 4)
                             for k in ('second_half', 'all')}
    first = trained[('rope' if name == 'rope_pi' and 'rope' in config.encodings else name, 0)]
    table[name]['final_train_loss'] = round(
        float([r for r in first.history if 'loss' in r][-1]['loss']), 4)
  checks = check_claim(config, table)
  figures = []
  if jax.process_index() == 0:
    figures.append(_plot(config, table, os.path.join(workdir, 'loss_vs_length.png')))
  notes = (f'Byte-level LM ({config.model.num_layers} layers, d {config.model.d_model}, '
           f'{config.model.num_heads} heads) on {config.dataset}, trained at length '
           f'{config.train_length} for {config.loop.total_steps} steps, {config.seeds} seed(s). '
           f'Metric: mean next-token loss over the {config.metric.replace("_", " ")} of each '
           f'held-out window. The claim holds at a factor when {config.claim_encoding} is within '
           f'{config.claim_margin} of the best of {list(config.claim_contenders)} and below NoPE '
           f'and RoPE. FIRE\'s threshold starts at {config.fire.init_threshold_fraction} x the '
           'train length (the paper: 512 at 2048).')
  numbers = {'losses': {name: {str(k): v for k, v in row.items()} for name, row in table.items()},
             'checks': checks}
  check_list = [report.check(
      f'{factor}: {config.claim_encoding} minus the best of the contenders ({c["best"]})',
      c['fire_minus_best'], f'<= {config.claim_margin}, and below NoPE and RoPE', c['holds'])
      for factor, c in checks.items()]
  factors = list(config.eval_factors)
  tables = [report.table(
      f'Held-out loss ({config.metric.replace("_", " ")} of each window) by evaluation length',
      ['encoding'] + [f'{f * config.train_length} ({f}x)' for f in factors] + ['final train loss'],
      [[name] + [_metric(row, f, config.metric) for f in factors] + [row['final_train_loss']]
       for name, row in table.items()])]
  return report.make_summary(
      name='fire_pe', title='FIRE: length generalisation of position encodings', claim=CLAIM,
      numbers=numbers, checks=check_list, tables=tables, workdir=workdir, figures=figures,
      notes=notes, config=config)

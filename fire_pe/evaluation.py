"""Held-out evaluation of the study's LMs at multiples of the train length: the mean next-token loss
over each window's second half, over all of it, and by query-position bucket; seeds' means."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from common.models import transformer
from fire_pe import lm

NOT_REPRESENTABLE = 'not representable'


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
  model = lm.make_model(config, name, attention=config.eval_attention, fire_overrides=fire_overrides)
  out = {}
  for factor in config.eval_factors:
    length = int(factor * config.train_length)
    try:
      jax.eval_shape(model.apply, {'params': params}, jax.ShapeDtypeStruct((1, length), jnp.int32))
    except transformer.SequenceTooLongError:
      out[factor] = NOT_REPRESENTABLE
      continue
    data = lm.windows(test_ids, length + 1, max(1, config.eval_tokens // length))
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


def mean_row(rows: list[dict], factors) -> dict[str, Any]:
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

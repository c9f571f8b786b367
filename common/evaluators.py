"""Evaluator plug-ins for the training loop: each gets a predict function, not the model.

    evaluator = ClassificationEvaluator(predict_fn, arrays, batch_size=256, mesh=mesh, prefix='test')
    evaluator.run(state)   # {'test/accuracy': ..., 'test/loss': ...}

Every example is evaluated exactly once: the last batch is padded and the padding masked out.
"""

from __future__ import annotations

import concurrent.futures
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from common import mesh as mesh_lib
from common.data import pipeline
from common.data import stream

PredictFn = Callable[..., jax.Array]  # (params, model_state, inputs) -> logits


def padded_batches(data, global_batch_size: int, transform: stream.Transform | None = None):
  """Yields (this process's rows, mask) for every global batch, the last one padded.

  `data`: arrays {name: (N, ...)} in memory, or a stream.Source read in order (with `transform`
  decoding each example, e.g. stream.ImageTransform(size, train=False)).
  """
  in_memory = isinstance(data, dict)
  n = len(next(iter(data.values()))) if in_memory else len(data)
  pc, pi = jax.process_count(), jax.process_index()
  local = global_batch_size // pc
  pool = None if in_memory else concurrent.futures.ThreadPoolExecutor(8)
  try:
    for start in range(0, n, global_batch_size):
      idx = np.arange(start, start + global_batch_size)[pi * local:(pi + 1) * local]
      mask = idx < n
      idx = np.where(mask, idx, 0)
      rows = ({k: v[idx] for k, v in data.items()} if in_memory
              else stream.read(data, idx, transform, pool=pool))
      yield rows, mask
  finally:
    if pool:
      pool.shutdown(wait=False, cancel_futures=True)


class ClassificationEvaluator:
  """Accuracy and mean cross-entropy of `predict_fn` over a whole split."""

  def __init__(self, predict_fn: PredictFn, arrays, *, batch_size: int,
               mesh: jax.sharding.Mesh, prefix: str = 'test',
               transform: stream.Transform | None = None):
    """`arrays`: {'inputs', 'label'} in memory, or a stream.Source with `transform`."""
    self.arrays = arrays
    self.transform = transform
    self.prefix = prefix
    ways = mesh_lib.batch_axis_size(mesh)
    self.batch_size = -(-batch_size // ways) * ways  # round up to fill the data axis
    self.sharding = mesh_lib.batch_sharding(mesh)

    def sums(params, model_state, batch, mask):
      logits = predict_fn(params, model_state, batch['inputs'])
      correct = (jnp.argmax(logits, -1) == batch['label']) & mask
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch['label'])
      return {'correct': jnp.sum(correct), 'loss': jnp.sum(jnp.where(mask, loss, 0.0)),
              'count': jnp.sum(mask)}

    self._sums = jax.jit(sums, out_shardings=mesh_lib.replicated(mesh))

  def run(self, state) -> dict[str, float]:
    totals = {'correct': 0.0, 'loss': 0.0, 'count': 0.0}
    for batch, mask in padded_batches(self.arrays, self.batch_size, self.transform):
      batch, mask = pipeline.to_global((batch, mask), self.sharding)
      out = jax.device_get(self._sums(state.params, state.model_state, batch, mask))
      totals = {k: totals[k] + float(out[k]) for k in totals}
    count = max(totals['count'], 1.0)
    return {f'{self.prefix}/accuracy': totals['correct'] / count,
            f'{self.prefix}/loss': totals['loss'] / count,
            f'{self.prefix}/examples': int(totals['count'])}   # for an interval on the accuracy

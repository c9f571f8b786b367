"""The study's language models: one byte-level TransformerLM per position encoding, trained with
the common loop on windows of the corpus (or rows streamed from a TFDS text dataset)."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from common import train as train_lib
from common.data import loader
from common.data import pipeline
from common.data import stream
from common.models import transformer
from fire_pe import encodings


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


def train_source(config) -> stream.TfdsSource:
  """The training split's documents, read on demand (DatasetError naming the `tfds build ...
  --file_format=array_record` command when the dataset is not prepared so)."""
  return stream.tfds_source(config.dataset, config.train_split, data_dir=config.get('data_dir'))


def train_iterator(config, seed: int, train_ids: np.ndarray | None):
  """Windows of the in-memory corpus, or (config.train_input='stream') rows packed on demand from
  a TFDS text dataset's documents, for corpora larger than a host (c4)."""
  if config.get('train_input', 'memory') == 'stream':
    rows = stream.TextRows(train_source(config), config.train_length, config.docs_per_row)
    return stream.StreamIterator(rows, config.loop.batch_size, seed=seed)
  data = {'tokens': windows(train_ids, config.train_length + 1)}
  return pipeline.BatchIterator(data, config.loop.batch_size, seed=seed)


def train_functions(config, name: str):
  """(model, init_fn, loss_fn) of encoding `name` as the common loop trains it (train_encoding;
  fire_pe.memory compiles the same step for its per-device memory)."""
  model = make_model(config, name)
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

  return model, init_fn, loss_fn


def train_batch_shapes(config) -> dict[str, tuple[tuple[int, ...], Any]]:
  """{field: (global shape, dtype)} of a training batch: windows of the corpus are tokens only;
  streamed rows (stream.TextRows) carry the weights of their padding too."""
  batch, length = config.loop.batch_size, config.train_length
  shapes = {'tokens': ((batch, length + 1), jnp.int32)}
  if config.get('train_input', 'memory') == 'stream':
    shapes['weights'] = ((batch, length), jnp.float32)
  return shapes


def train_encoding(config, name: str, seed: int, train_ids: np.ndarray | None, workdir: str):
  _, init_fn, loss_fn = train_functions(config, name)
  loop = config.loop.copy_and_resolve_references()
  with loop.unlocked():
    loop.seed = seed
  train_iter = train_iterator(config, seed, train_ids)
  # The model is defined outside the loop config: what determines it joins the run's identity.
  identity = {'encoding': name, 'model': config.model.to_dict(), 'fire': config.fire.to_dict(),
              'train_length': config.train_length}
  if name in encodings.RANDOM_POSITIONS:
    identity['random_positions_factor'] = config.random_positions_factor
  result = train_lib.train(loop, workdir, init_fn=init_fn, loss_fn=loss_fn, train_iter=train_iter,
                           identity=identity)
  return result

"""The pause study's pretraining rows: cut from a host array, or streamed batch by batch.

    data = pretraining.pretrain_data(config)        # rows (memory) or a source of rows (stream)
    batches = pretraining.pretrain_iterator(config, 'pause', data)

train_input='memory' (the CPU variants): total_steps x batch_size rows cut at random offsets of
the corpus and of algorithmic text, one host array; the pause model's copy gets its pauses all at
once. train_input='stream' (c4): the corpus's documents read from TFDS array_record files as their
batch is needed and packed docs_per_row to a row (common.data.stream.TextRows: never the corpus,
nor the 195 GiB of c4's rows, in host memory); the pause model's rows get the same insertion
(pausing.PauseRows, which is pausing.pretrain_batch on one row) as each is read, drawn from
(pretrain.seed, epoch, row index). Both models read the same rows in the same order.
"""

from __future__ import annotations

import numpy as np

from common import lm
from common.data import loader
from common.data import pipeline
from common.data import stream
from common.data import text_tasks
from pause import diagnosis
from pause import pausing
from pause import tasks

STREAM_ID_SAMPLE = 1024  # streamed rows whose ids stand for the pretraining's (the diagnosis)


def pretrain_pauses(config) -> int:
  """M_pt of the pause model's rows (pretrain_length + 1 tokens)."""
  return pausing.pretrain_pauses(config.pretrain_length + 1, config.pretrain_pause_fraction)


def pretrain_rows(config, seed: int = 0) -> np.ndarray:
  """(total_steps * batch_size, length + 1) rows cut at random offsets of the corpus or of the
  algorithmic text (config.algorithmic_fraction of them): each row is seen once."""
  corpus = loader.load_text(config.corpus, 'train', data_dir=config.get('data_dir'),
                            max_bytes=config.max_corpus_bytes)
  algorithmic = text_tasks.encode(tasks.algorithmic_text(config.algorithmic_lines, seed))
  n = config.pretrain.total_steps * config.pretrain.batch_size
  width = config.pretrain_length + 1
  rng = np.random.default_rng(seed)
  from_algo = rng.random(n) < config.algorithmic_fraction
  rows = np.empty((n, width), np.int32)
  for source, pick in ((corpus, ~from_algo), (algorithmic, from_algo)):
    if len(source) <= width:
      raise loader.DatasetError(f'A pretraining source has {len(source)} tokens: less than one '
                                f'row of {width}.')
    starts = rng.integers(0, len(source) - width, int(pick.sum()))
    rows[pick] = source[starts[:, None] + np.arange(width)[None, :]]
  return rows


def pretrain_source(config) -> stream.TextRows:
  """train_input='stream': the corpus's training documents (a TFDS dataset prepared as
  array_record, read on demand, never whole in host memory) packed docs_per_row to a row of
  pretrain_length + 1 tokens (common.data.stream.TextRows). Raises loader.DatasetError naming
  the `tfds build` command when the corpus is not prepared."""
  documents = stream.tfds_source(config.corpus, 'train', data_dir=config.get('data_dir'))
  return stream.TextRows(documents, config.pretrain_length, config.docs_per_row)


def pretrain_data(config) -> np.ndarray | stream.TextRows:
  """The rows both models are pretrained on: a host array (train_input='memory') or a source of
  rows read batch by batch (train_input='stream')."""
  if config.train_input == 'stream':
    return pretrain_source(config)
  return pretrain_rows(config)


def pretrained_ids(config, data, sample_rows: int = STREAM_ID_SAMPLE) -> np.ndarray:
  """The ordinary ids the pretraining rows hold (the diagnosis's trained byte embeddings): all
  of them in memory; when streamed, those of the first `sample_rows` rows of the source."""
  if config.train_input == 'stream':
    rows = stream.read(data, range(min(len(data), sample_rows)))['tokens']
  else:
    rows = data
  return diagnosis.seen_ids(rows, loader.BYTE_VOCAB_SIZE)


def pretrain_iterator(config, kind: str, data, *,
                      num_special_tokens: int = 1) -> pipeline.BatchOrder:
  """The pretraining batches of the standard ('standard') or pause ('pause') model, both over the
  same rows in the same order ({'tokens' (B, L + 1), 'weights' (B, L)}).

  In memory, the pauses go into all rows at once (one draw); streamed, the same insertion
  (pausing.PauseRows: pausing.pretrain_batch on one row) goes into each row as its batch is read,
  drawn from (pretrain.seed, epoch, row index), so batch k stays a pure function of k (a resumed
  run, any number of processes, reads the same rows and pauses).
  """
  replace = config.pause_positions == 'with_replacement'
  if config.train_input == 'stream':
    transform = None
    if kind == 'pause':
      transform = pausing.PauseRows(pretrain_pauses(config), replace=replace,
                                    num_special_tokens=num_special_tokens)
    return stream.StreamIterator(data, config.pretrain.batch_size, seed=config.pretrain.seed,
                                 transform=transform)
  if kind == 'pause':
    batch = pausing.pretrain_batch(data, pretrain_pauses(config), np.random.default_rng(1),
                                   replace=replace, num_special_tokens=num_special_tokens)
  else:
    batch = {'tokens': data, 'weights': lm.weights_for_targets(data)}
  return pipeline.BatchIterator(batch, config.pretrain.batch_size, seed=config.pretrain.seed)

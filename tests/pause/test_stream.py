"""Pretraining rows streamed batch by batch (train_input='stream', the c4 variant): the same rows
and the same pause insertion as the in-memory path, configs it cannot honour refused before
compute, the real step's memory, and fine-tunings tied to their pretrained weights."""

import os

import jax
import numpy as np
import pytest

from common import checkpoint as ckpt_lib
from common import config_lib
from common import lm
from common import memory as memory_lib
from common import rehearsal
from common.data import loader
from common.data import stream
from configs.pause import lm as pause_config
import pause
from pause import experiment
from pause import memory as pause_memory
from pause import pretraining

P = pause.PAUSE_ID
DOCS = [b'the quick brown fox jumps over the lazy dog. ' * (1 + i % 3) + bytes([65 + i])
        for i in range(40)]


def _stream_config(**dotted):
  """The tiny variant reading its pretraining rows as c4 does (rows of 16 tokens, 2 documents
  packed to a row), batch 4 for 3 steps."""
  config = pause_config.get_config('tiny')
  fields = {'train_input': 'stream', 'docs_per_row': 2, 'algorithmic_fraction': 0.0,
            'pretrain_length': 16, 'pretrain.batch_size': 4, 'pretrain.total_steps': 3}
  fields.update(dotted)
  return config_lib.set_fields(config, **fields)


def _rows(config):
  documents = stream.ArraySource({'text': np.array(DOCS, dtype=object)})
  return stream.TextRows(documents, config.pretrain_length, config.docs_per_row)


def _batches(iterator, steps):
  out = [next(iterator) for _ in range(steps)]
  if hasattr(iterator, 'close'):
    iterator.close()
  return out


def test_streamed_rows_are_the_in_memory_batches_and_their_pauses_the_same_insertion():
  config = _stream_config()
  source = _rows(config)
  rows = np.stack([source[i]['tokens'] for i in range(len(source))])
  memory_config = config_lib.set_fields(config.copy_and_resolve_references(),
                                        train_input='memory')
  m_pt = pretraining.pretrain_pauses(config)
  assert m_pt == 2  # round(0.1 x 17)
  streamed = _batches(pretraining.pretrain_iterator(config, 'standard', source), 3)
  in_memory = _batches(pretraining.pretrain_iterator(memory_config, 'standard', rows), 3)
  order = pretraining.pretrain_iterator(memory_config, 'standard', rows)
  for k, (s, m) in enumerate(zip(streamed, in_memory)):
    # The standard model: the same rows, in the same order, with the same weights.
    np.testing.assert_array_equal(s['tokens'], m['tokens'])
    np.testing.assert_array_equal(s['weights'], m['weights'])
    np.testing.assert_array_equal(s['tokens'], rows[order.indices(k)])
  paused = _batches(pretraining.pretrain_iterator(config, 'pause', source), 3)
  for k, batch in enumerate(paused):
    indices = order.indices(k)
    # Each row: the in-memory path's insertion (pausing.pretrain_batch) on that row, drawn from
    # the stream's RNG for (seed, epoch 0, row index).
    for j, i in enumerate(indices):
      want = pause.pretrain_batch(rows[i][None], m_pt, np.random.default_rng(
          [config.pretrain.seed, 0, int(i)]), num_special_tokens=1)
      np.testing.assert_array_equal(batch['tokens'][j], want['tokens'][0])
      np.testing.assert_array_equal(batch['weights'][j], want['weights'][0])
      # ... which keeps the row's tokens in order, trimmed back to the length.
      kept = batch['tokens'][j][batch['tokens'][j] != P]
      np.testing.assert_array_equal(kept, rows[i][:len(kept)])
      assert len(kept) >= len(rows[i]) - m_pt
    # No loss where the target is a pause or padding, as in memory.
    np.testing.assert_array_equal(
        batch['weights'], lm.weights_for_targets(batch['tokens'], exclude=(P, 0)))


def test_a_resumed_stream_reads_the_same_rows_and_pauses():
  config = _stream_config()
  source = _rows(config)
  whole = _batches(pretraining.pretrain_iterator(config, 'pause', source), 3)
  resumed = pretraining.pretrain_iterator(config, 'pause', source)
  resumed.set_state({'position': 2, 'seed': config.pretrain.seed, 'global_batch_size': 4})
  [third] = _batches(resumed, 1)
  np.testing.assert_array_equal(third['tokens'], whole[2]['tokens'])


@pytest.mark.parametrize('fields,match', [
    ({}, r"algorithmic_fraction=0.3 with train_input='stream'"),
    ({'algorithmic_fraction': 0.0}, r"corpus='stdlib_text' with train_input='stream'"),
    ({'algorithmic_fraction': 0.0, 'corpus': 'c4/en', 'docs_per_row': 0}, r'docs_per_row=0'),
])
def test_the_streamed_path_refuses_a_config_it_cannot_honour_before_compute(
    tmp_path, fields, match):
  config = config_lib.set_fields(pause_config.get_config('tiny'), train_input='stream', **fields)
  with pytest.raises(config_lib.ConfigError, match=match):
    experiment.run(config, str(tmp_path))
  assert not os.path.exists(tmp_path / 'pretrain')


def test_an_unknown_train_input_and_c4_rows_held_in_memory_are_refused():
  with pytest.raises(config_lib.ConfigError, match=r"train_input='disk': use one of"):
    experiment.check_config(config_lib.set_fields(pause_config.get_config('tiny'),
                                                  train_input='disk'))
  # The failure: 25.6M rows of 2,049 tokens allocated as one host array (195 GiB).
  config = config_lib.set_fields(pause_config.get_config('c4'), train_input='memory')
  with pytest.raises(config_lib.ConfigError, match=r"195 GiB .* use train_input='stream'"):
    experiment.check_config(config)


def test_pause_rows_take_one_row_and_a_whole_count():
  rng = np.random.default_rng(0)
  with pytest.raises(pause.PauseError, match='one row'):
    pause.PauseRows(2)({'tokens': np.ones((2, 9), np.int32)}, rng)
  with pytest.raises(pause.PauseError, match='num_pauses=-1'):
    pause.PauseRows(-1)
  with pytest.raises(pause.PauseError, match='outside the model'):
    pause.PauseRows(2, pause_id=P + 1)


def test_c4_streams_its_rows_with_blockwise_attention_and_declares_its_rehearsal():
  config = pause_config.get_config('c4')
  assert config.train_input == 'stream' and config.corpus == 'c4/en'
  assert experiment.make_model(config).attention == 'blockwise'
  rehearsed = rehearsal.apply(config)
  experiment.check_config(rehearsed)
  experiment.check_config(rehearsal.apply(config, first_run=True))
  # Only sizes shrink: the model, the input path, the meshes and shardings are c4's own.
  assert rehearsed.model == config.model and rehearsed.train_input == 'stream'
  for loop in ('pretrain', 'finetune'):
    assert rehearsed[loop].mesh == config[loop].mesh
    assert rehearsed[loop].sharding == config[loop].sharding
  assert config.rehearsal.memory.step == 'pause.memory:pretrain_step'


def test_a_real_run_without_prepared_c4_stops_with_the_tfds_build_command(tmp_path):
  config = config_lib.set_fields(rehearsal.apply(pause_config.get_config('c4')),
                                 data_dir=str(tmp_path / 'no_data'))
  with pytest.raises(loader.DatasetError, match='tfds build c4/en --file_format=array_record'):
    experiment.run(config, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run' / 'pretrain')


def test_the_memory_entry_compiles_the_experiments_own_pretraining_step():
  config = pause_config.get_config('tiny')
  estimate = pause_memory.pretrain_step(config, None)
  init_fn, _ = experiment.pretrain_model(config)
  params = jax.eval_shape(init_fn, jax.random.key(0))['params']
  nbytes = sum(int(np.prod(a.shape)) * a.dtype.itemsize for a in jax.tree.leaves(params))
  assert estimate.params == nbytes                  # one device: the whole model
  assert estimate.optimizer >= 2 * nbytes           # Adam's two moments
  assert f'tokens ({config.pretrain.batch_size}, {config.pretrain_length + 1})' in estimate.note
  spec = rehearsal.apply(pause_config.get_config('c4')).rehearsal.memory
  assert memory_lib._paper_step(spec.step) is pause_memory.pretrain_step  # pylint: disable=protected-access


def test_a_fine_tuning_is_not_resumed_from_other_pretrained_weights(tmp_path):
  """Was: the pretrained weights were constants of init_fn, outside the run's identity, so a
  workdir whose pretraining had changed restored the old fine-tuning as if finished."""
  config = config_lib.set_fields(pause_config.get_config('tiny'), **{
      'finetune.total_steps': 1, 'train_examples_per_task': 8})
  init_fn, _ = experiment.pretrain_model(config)
  params = jax.device_get(init_fn(jax.random.key(0))['params'])
  setting = experiment.settings(config)[0]
  data = experiment.task_data(config, 'train')
  experiment.finetune(config, setting, params, data, str(tmp_path))
  again = experiment.finetune(config, setting, params, data, str(tmp_path))
  assert again.resumed_from == 1     # the same weights: the finished run is restored
  other = jax.tree.map(lambda a: a + 1.0, params)
  with pytest.raises(ckpt_lib.CheckpointMismatchError, match='init_params'):
    experiment.finetune(config, setting, other, data, str(tmp_path))

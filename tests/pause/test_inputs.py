"""Wrong input is refused before any compute (issue 29): the config by check_config (dotted field
names, every loop section up front), the library's ids, delays and rows."""

import os

import numpy as np
import pytest

from common import config_lib
from configs.pause import lm as pause_config
import pause
from pause import experiment
from pause import tasks

P = pause.PAUSE_ID


def _tiny(**dotted):
  config = pause_config.get_config('tiny')
  return config_lib.set_fields(config, **dotted)


@pytest.mark.parametrize('variant', pause_config.VARIANTS)
def test_every_variant_passes_check_config(variant):
  experiment.check_config(pause_config.get_config(variant))


@pytest.mark.parametrize('field,value,match', [
    # Loop sections are checked up front, each named by its section (was: found after
    # pretraining, as `config.keep_checkpoints`).
    ('finetune.keep_checkpoints', 0, r'finetune\.keep_checkpoints=0'),
    ('finetune.batch_size', 0, r'finetune\.batch_size=0'),
    ('finetune.optimizer.learning_rate', -1e-3, r'finetune\.optimizer\.learning_rate'),
    ('pretrain.checkpoint_every_steps', 0, r'pretrain\.checkpoint_every_steps=0'),
    ('pretrain.total_steps', 0, r'pretrain\.total_steps=0'),
    ('finetune.ensemble.chunk_size', -1, r'finetune\.ensemble\.chunk_size=-1'),
    ('finetune.batch_size', 4096, r'finetune\.batch_size=4096: more than the 120'),
    ('seeds', 5, 'one model per seed'),
    # Pauses.
    ('num_pauses', -1, 'num_pauses=-1 is negative'),
    ('num_pauses', 40, 'do not fit'),
    ('num_pauses', 0, 'at least one pause'),
    ('minf_grid', (0, 99), r'minf_grid\[1\]=99'),
    ('mft_grid', (2.5,), r'mft_grid\[0\]=2.5: expected a whole number'),
    ('pretrain_pause_fraction', 1.0, 'pretrain_pause_fraction=1.0'),
    ('pause_positions', 'sometimes', 'distinct'),
    # Rows and prompts that would not fit (was: found after pretraining, in finetune_batch).
    ('finetune_length', 20, "finetune_length=20: task 'count_long' needs rows of 25"),
    ('minf_grid', (0, 16), "minf_grid=.*'count_long' prompts of 18 tokens"),
    ('answer_tokens', 2, "answer_tokens=2: task 'count_long' has answers of up to 2"),
    # Names, sizes, model, thresholds.
    ('tasks', ('add', 'multiply'), "unknown 'multiply'"),
    ('tasks', ('count', 'count'), 'names one twice'),
    ('tasks', (), 'at least one task'),
    ('ablations', ('append',), "unknown 'append'"),
    ('model.num_heads', 3, r'model\.d_model=16 is not divisible by model\.num_heads=3'),
    ('model.encoding', 'alibi', r"model\.encoding='alibi'"),
    ('model.num_layers', 0, r'model\.num_layers=0'),
    ('max_corpus_bytes', 10, 'not one pretraining row'),
    ('algorithmic_fraction', 1.5, r'algorithmic_fraction=1.5'),
    ('eval_batch_size', 0, 'eval_batch_size=0'),
    ('test_examples_per_task', 0, 'test_examples_per_task=0'),
    ('checks.recover_share', 1.5, r'checks\.recover_share=1.5'),
    ('checks.floor', -0.1, r'checks\.floor=-0.1'),
    ('diagnosis_arms', ('frozn',), r"diagnosis_arms: unknown 'frozn'"),
    ('checks.about_margin', float('nan'), r'checks\.about_margin=nan'),
])
def test_bad_config_fails_before_compute_naming_the_field(tmp_path, field, value, match):
  config = _tiny(**{field: value})
  with pytest.raises(config_lib.ConfigError, match=match):
    experiment.check_config(config)
  with pytest.raises(config_lib.ConfigError, match=match):   # run checks first: nothing trained
    experiment.run(config, str(tmp_path))
  assert not os.path.exists(tmp_path / 'pretrain')


def test_task_lengths_bound_every_example():
  assert set(tasks.MAX_TOKENS) == set(tasks.TASKS)
  for name, (prompt, answer) in tasks.MAX_TOKENS.items():
    examples = tasks.task_examples(name, 'train', 3000)
    assert max(len(ex['inputs']) for ex in examples) == prompt, name
    assert max(len(ex['targets']) for ex in examples) <= answer, name


# ---------------------------------------------------------------------------------------------
# The library: ids, delays, rows.
# ---------------------------------------------------------------------------------------------
def _rows(length=10):
  return np.random.default_rng(0).integers(3, 259, (4, length)).astype(np.int32)


@pytest.mark.parametrize('call', [
    lambda: pause.insert_pauses(_rows(), 2, np.random.default_rng(0), pause_id=5000),
    lambda: pause.pretrain_batch(_rows(), 2, np.random.default_rng(0), pause_id=5000),
    lambda: pause.finetune_batch([np.array([3])], [np.array([4])], pause.Delay(2, token=5000),
                                 length=8),
    lambda: pause.inference_prompt(np.array([3]), 2, pause_id=5000),
])
def test_a_pause_id_past_the_models_special_tokens_is_refused(call):
  with pytest.raises(pause.PauseError, match=r"outside the model's special ids \[259, 260\)"):
    call()


def test_id_261_is_never_fed_to_a_one_special_token_model_as_a_pause():
  """TransformerLM reads any id past its special ids as its last special token under jit (it
  clips), so with one special token id 261 would be the <pause>: the library refuses it as the
  pause id and inside the text, and accepts it where the model has three special tokens."""
  with pytest.raises(pause.PauseError, match='261'):
    pause.insert_pauses(_rows(), 2, np.random.default_rng(0), pause_id=261)
  with pytest.raises(pause.PauseError, match='261'):
    pause.check_pause_id(261)
  rows = _rows()
  rows[1, 3] = 261
  with pytest.raises(pause.PauseError, match=r'pretraining rows: id 261 at index \(1, 3\)'):
    pause.insert_pauses(rows, 2, np.random.default_rng(0))
  with pytest.raises(pause.PauseError, match='Example 1 prefix: id 261'):
    pause.finetune_batch([np.array([3]), np.array([5, 261])], [np.array([4]), np.array([4])],
                         pause.Delay(1), length=8)
  with pytest.raises(pause.PauseError, match='Example 0 target: id 259'):
    pause.finetune_batch([np.array([3])], [np.array([P])], pause.Delay(1), length=8)
  with pytest.raises(pause.PauseError, match='prefix: id 261'):
    pause.inference_prompt(np.array([5, 261]), 2)
  out = pause.insert_pauses(_rows(), 2, np.random.default_rng(0), pause_id=261,
                            num_special_tokens=3)
  assert (out == 261).any()


@pytest.mark.parametrize('num_pauses', [2.5, 2.0, '2', True, None])
def test_a_delay_that_is_not_a_whole_number_is_refused_at_construction(num_pauses):
  with pytest.raises(pause.PauseError, match='whole number'):
    pause.Delay(num_pauses)


def test_a_delay_token_that_is_not_an_id_is_refused_and_numpy_counts_are_accepted():
  with pytest.raises(pause.PauseError, match='token id'):
    pause.Delay(2, token=259.0)
  np.testing.assert_array_equal(pause.Delay(np.int64(2)).apply(np.array([5])), [5, P, P])


def test_an_empty_prompt_is_refused_naming_the_row():
  with pytest.raises(pause.PauseError, match='Example 1: the prefix is empty'):
    pause.finetune_batch([np.array([3]), np.array([], np.int32)], [np.array([4]), np.array([4])],
                         pause.Delay(0), length=8)
  with pytest.raises(pause.PauseError, match='Example 0: the target is empty'):
    pause.finetune_batch([np.array([3])], [np.array([], np.int32)], pause.Delay(0), length=8,
                         eos_id=None)
  with pytest.raises(pause.PauseError, match='empty prompt'):
    pause.inference_prompt(np.array([], np.int32), 0)
  # An empty prefix with pauses before the answer still has a position to predict from.
  batch = pause.finetune_batch([np.array([], np.int32)], [np.array([4])], pause.Delay(2),
                               length=8)
  np.testing.assert_array_equal(np.flatnonzero(batch['weights'][0]), [1, 2])

"""The pause library: insertion, masks, fine-tuning rows, inference prompts, bad input; the text
task registry (and seqio, when installed)."""

import numpy as np
import pytest

from common import lm
from common.data import loader
from common.data import text_tasks
import pause
from pause import pausing
from pause import tasks

P = pause.PAUSE_ID


def _rows(n=200, length=33, seed=0):
  return np.random.default_rng(seed).integers(3, 259, (n, length)).astype(np.int32)


@pytest.mark.parametrize('replace', [True, False])
def test_insert_pauses_keeps_order_and_length(replace):
  rows = _rows()
  out = pause.insert_pauses(rows, 5, np.random.default_rng(1), replace=replace)
  assert out.shape == rows.shape
  for before, after in zip(rows, out):
    kept = after[after != P]
    assert (after == P).sum() + len(kept) == len(before)
    np.testing.assert_array_equal(kept, before[:len(kept)])   # a prefix, in order, trimmed
    assert (after == P).sum() <= 5
  # Pauses that land at the very end are trimmed away; on average most survive.
  assert 4.0 < (out == P).sum(1).mean() <= 5.0


def test_distinct_positions_never_stack_but_replacement_does():
  rows = _rows(n=2000, length=9)
  adjacent = lambda out: np.any((out[:, 1:] == P) & (out[:, :-1] == P))
  assert not adjacent(pause.insert_pauses(rows, 4, np.random.default_rng(0), replace=False))
  assert adjacent(pause.insert_pauses(rows, 4, np.random.default_rng(0), replace=True))


def test_insertion_points_are_uniform():
  rows = np.tile(np.arange(3, 35, dtype=np.int32), (20000, 1))   # 32 tokens
  out = pause.insert_pauses(rows, 1, np.random.default_rng(0))
  where = np.argmax(out == P, axis=1)[(out == P).any(1)]
  counts = np.bincount(where, minlength=32)
  assert counts.min() > 0.8 * counts.mean() and counts.max() < 1.2 * counts.mean()


def test_pretrain_mask_skips_pause_targets_only():
  rows = _rows(n=50)
  batch = pause.pretrain_batch(rows, 4, np.random.default_rng(2))
  targets = batch['tokens'][:, 1:]
  np.testing.assert_array_equal(batch['weights'] == 0, targets == P)
  # The token after a pause is still predicted (its input is the pause).
  inputs = batch['tokens'][:, :-1]
  assert batch['weights'][(inputs == P) & (targets != P)].min() == 1.0


def test_finetune_rows_put_pauses_between_prefix_and_target():
  batch = pause.finetune_batch([np.array([10, 11, 12])], [np.array([20, 21])], pause.Delay(3),
                               length=12)
  row = batch['tokens'][0]
  np.testing.assert_array_equal(row[:9], [10, 11, 12, P, P, P, 20, 21, 1])
  assert (row[9:] == 0).all()
  # Loss on the answer and its EOS only: targets at tokens 6, 7, 8 -> weights 5, 6, 7.
  np.testing.assert_array_equal(np.flatnonzero(batch['weights'][0]), [5, 6, 7])
  prepend = pause.finetune_batch([np.array([10, 11])], [np.array([20])],
                                 pause.Delay(2, 'prepend'), length=8)
  np.testing.assert_array_equal(prepend['tokens'][0, :5], [P, P, 10, 11, 20])
  filler = pause.finetune_batch([np.array([10])], [np.array([20])],
                                pause.Delay(2, token=pause.FILLER_ID), length=8)
  np.testing.assert_array_equal(filler['tokens'][0, :4], [10, pause.FILLER_ID,
                                                           pause.FILLER_ID, 20])


def test_inference_prompt_appends_pauses():
  np.testing.assert_array_equal(pause.inference_prompt(np.array([5, 6]), 3), [5, 6, P, P, P])
  np.testing.assert_array_equal(pause.inference_prompt(np.array([5, 6]), 0), [5, 6])


@pytest.mark.parametrize('call,match', [
    (lambda: pause.insert_pauses(_rows(length=10), -1, np.random.default_rng(0)), 'negative'),
    (lambda: pause.insert_pauses(_rows(length=10), 10, np.random.default_rng(0)), 'do not fit'),
    (lambda: pause.insert_pauses(_rows(length=10), 2, np.random.default_rng(0), pause_id=100),
     'inside the vocabulary'),
    (lambda: pause.insert_pauses(_rows(length=10), 2.0, np.random.default_rng(0)),
     'whole number'),
    (lambda: pause.insert_pauses(np.zeros(10, np.int32), 2, np.random.default_rng(0)),
     'rows, length'),
    (lambda: pause.finetune_batch([np.array([3])], [np.array([4])], pause.Delay(8), length=8),
     'do not fit'),
    (lambda: pause.finetune_batch([np.array([3] * 5)], [np.array([4] * 3)], pause.Delay(2),
                                  length=8), 'exceed'),
    (lambda: pause.finetune_batch([np.array([3])], [np.array([4])], pause.Delay(2, token=7),
                                  length=8), 'inside the vocabulary'),
    (lambda: pause.Delay(-2), 'negative'),
    (lambda: pause.Delay(2, 'middle'), 'append'),
    (lambda: pause.inference_prompt(np.array([3] * 6), 4, max_length=8), 'exceeds'),
    (lambda: pause.inference_prompt(np.array([3]), -1), 'negative'),
    (lambda: pause.inference_prompt(np.array([3]), 2, pause_id=258), 'inside the vocabulary'),
    (lambda: pause.pretrain_pauses(64, 1.5), 'fraction'),
    (lambda: pause.configuration('PausePT_Std'), 'Unknown configuration'),
])
def test_bad_input_is_refused(call, match):
  with pytest.raises(pause.PauseError, match=match):
    call()


def test_four_configurations():
  assert set(pause.CONFIGURATIONS) == {'StdPT_StdFT', 'StdPT_PauseFT', 'PausePT_StdFT',
                                       'PausePT_PauseFT'}
  setting = pause.configuration('PausePT_StdFT')
  assert setting.pause_pretrained and not setting.finetune_pauses


def test_tasks_answers_are_right_and_splits_disjoint():
  for ex in tasks.task_examples('add', 'train', 50):
    a, b = ex['inputs'][2:-2].split()
    assert int(ex['targets']) == int(a) + int(b)
  for ex in tasks.task_examples('digit_sum', 'train', 50):
    assert int(ex['targets']) == sum(map(int, ex['inputs'].split()[1])) % 10
  for ex in tasks.task_examples('count', 'train', 50):
    _, letter, text, _ = ex['inputs'].split()
    assert int(ex['targets']) == text.count(letter)
  for ex in tasks.task_examples('add_2digit', 'train', 50):
    a, b = ex['inputs'][2:-2].split()
    assert len(a) == len(b) == 2 and int(ex['targets']) == int(a) + int(b)
  for ex in tasks.task_examples('count_long', 'train', 50):
    _, letter, text, _ = ex['inputs'].split()
    assert len(text) == 12 and set(text) <= {'a', 'b'} and int(ex['targets']) == text.count(letter)
  train = {ex['inputs'] for ex in tasks.task_examples('add', 'train', 500)}
  test = {ex['inputs'] for ex in tasks.task_examples('add', 'test', 500)}
  assert not train & test


def test_test_split_excludes_every_prompt_the_model_is_finetuned_on():
  """The test drops prompts among the first train_size training examples, however many the
  fine-tuning uses (not only as many as the test asks for)."""
  train = {ex['inputs'] for ex in tasks.task_examples('count_long', 'train', 6000)}
  test = [ex['inputs'] for ex in tasks.task_examples('count_long', 'test', 300, train_size=6000)]
  assert test and not train & set(test)
  assert len(tasks.task_examples('count_long', 'test', 300, train_size=10)) == 300


def test_adding_a_task_changes_no_other_tasks_data(monkeypatch):
  before = tasks.task_examples('count', 'train', 20)
  monkeypatch.setitem(tasks.TASKS, 'aaa_new', tasks.TASKS['add'])
  monkeypatch.setitem(tasks.TASK_STREAMS, 'aaa_new', 99)
  assert tasks.task_examples('count', 'train', 20) == before


def test_a_task_whose_test_prompts_all_occur_in_training_is_refused(monkeypatch):
  monkeypatch.setitem(tasks.TASKS, 'tiny_space', lambda rng: {
      'inputs': f'x {int(rng.integers(3))} =', 'targets': '0'})
  monkeypatch.setitem(tasks.TASK_STREAMS, 'tiny_space', 98)
  with pytest.raises(text_tasks.TaskError, match='too few distinct prompts'):
    tasks.task_examples('tiny_space', 'test', 10, train_size=100)


def test_registry_serves_the_tasks_by_name():
  assert {'stdlib_text', 'pause_add', 'pause_count', 'pause_digit_sum',
          'pause_algorithmic'} <= set(text_tasks.names())
  rows = text_tasks.tokenized('pause_add', 'test')
  ex = text_tasks.examples('pause_add', 'test')[0]
  np.testing.assert_array_equal(rows[0]['inputs'], lm.Vocabulary().encode(ex['inputs']))
  with pytest.raises(text_tasks.TaskError, match='pause_add'):
    text_tasks.get('pause_ad')


def test_vocabulary_and_masked_loss():
  vocab = lm.Vocabulary(special=('<pause>',))
  assert vocab.id('<pause>') == P == loader.BYTE_VOCAB_SIZE
  assert vocab.model_fields() == {'vocab_size': 259, 'num_special_tokens': 1}
  assert vocab.decode(pause.inference_prompt(vocab.encode('2+2='), 2)) == '2+2=<pause><pause>'
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  logits = jnp.zeros((1, 3, 259))
  tokens = jnp.array([[5, P, 6, 7]])
  weights = jnp.array([[0.0, 1.0, 1.0]])
  loss = lm.weighted_loss(logits, tokens, weights)
  assert np.isfinite(float(loss)) and abs(float(loss) - np.log(259)) < 1e-4


def test_seqio_tasks_give_the_same_ids():
  pytest.importorskip('seqio')
  text_tasks.register_seqio(['pause_count'])
  import seqio  # pylint: disable=g-import-not-at-top
  dataset = seqio.get_mixture_or_task('pause_count').get_dataset(
      sequence_length=None, split='test', shuffle=False)
  first = next(dataset.as_numpy_iterator())
  ours = text_tasks.tokenized('pause_count', 'test')[0]
  np.testing.assert_array_equal(first['inputs'], ours['inputs'])
  np.testing.assert_array_equal(first['targets'], ours['targets'])

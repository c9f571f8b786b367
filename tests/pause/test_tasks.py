"""pause.tasks: the answers, disjoint splits, the text task registry and its seqio Tasks."""

import numpy as np
import pytest

from common import lm
from common.data import loader
from common.data import text_tasks
import pause
from pause import tasks

P = pause.PAUSE_ID


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

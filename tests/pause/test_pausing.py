"""pause.pausing: insertion, masks, fine-tuning rows, inference prompts, the four configurations,
bad input."""

import numpy as np
import pytest

import pause

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

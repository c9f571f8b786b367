"""Pause tokens (Goyal et al., 2023): pause-pretraining, pause-finetuning, pause-inference.

A <pause> is one token with its own embedding, outside the byte vocabulary (by default id 259 =
common.data.loader.BYTE_VOCAB_SIZE, TransformerLM(num_special_tokens=1)); the model never predicts
it (the readout covers the byte ids only).

    rows = insert_pauses(tokens, num_pauses=6, rng=rng)       # pretraining: (N, L + 1) -> same shape
    batch = finetune_batch(prefixes, targets, num_pauses=8, length=48)
    prompt = inference_prompt(prefix, num_pauses=8)           # then common.models.decoding

Batches are {'tokens': (N, L + 1), 'weights': (N, L)} (common.lm): weights[i] is the loss weight
of the target tokens[i + 1]. Pretraining: 0 where that target is a <pause> (the token after a pause
is still predicted, with the pause in context). Fine-tuning: 1 on the answer's tokens only.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from common import lm
from common.data import loader

PAUSE_ID = loader.BYTE_VOCAB_SIZE          # 259: the first id after the byte vocabulary
FILLER_ID = ord('.') + loader.BYTE_OFFSET   # '.' as an ordinary token: the filler control


class PauseError(ValueError):
  """Pause counts or ids that cannot be used; raised before any compute."""


def check_pause_id(pause_id: int, vocab_size: int = loader.BYTE_VOCAB_SIZE) -> int:
  try:
    return lm.check_special_id(pause_id, vocab_size, name='<pause>')
  except lm.VocabularyError as e:
    raise PauseError(str(e)) from e


def check_count(num: int, length: int, name: str) -> int:
  """0 <= num < length, a whole number."""
  if isinstance(num, bool) or not isinstance(num, (int, np.integer)):
    raise PauseError(f'{name}={num!r}: expected a whole number of pauses.')
  if num < 0:
    raise PauseError(f'{name}={num} is negative.')
  if num >= length:
    raise PauseError(f'{name}={num} pauses do not fit a sequence of length {length}: at least '
                     'one real token must remain (use fewer pauses than the length).')
  return int(num)


# ---------------------------------------------------------------------------------------------
# Pause-pretraining.
# ---------------------------------------------------------------------------------------------
def pretrain_pauses(length: int, fraction: float = 0.1) -> int:
  """M_pt = round(fraction * length) (the paper: 10% of the sequence length)."""
  if not 0 <= fraction < 1:
    raise PauseError(f'pause fraction {fraction} must lie in [0, 1).')
  return int(round(fraction * length))


def insert_pauses(tokens: np.ndarray, num_pauses: int, rng: np.random.Generator, *,
                  pause_id: int = PAUSE_ID, replace: bool = True,
                  vocab_size: int = loader.BYTE_VOCAB_SIZE) -> np.ndarray:
  """Inserts num_pauses <pause> tokens at uniformly random places in each row, trimmed back.

  tokens: (N, T) ids. Each row draws num_pauses insertion points among its T + 1 gaps (before
  token 0 ... after token T - 1): with `replace=True` independently (several pauses can stack in
  one gap, as the public injection script does), else distinct gaps. The row grows to
  T + num_pauses and is cut back to its first T tokens: the tokens pushed past the end are lost.
  """
  tokens = np.asarray(tokens)
  if tokens.ndim != 2:
    raise PauseError(f'tokens must be (rows, length), got shape {tokens.shape}.')
  n, length = tokens.shape
  check_count(num_pauses, length, 'num_pauses (M_pt)')
  check_pause_id(pause_id, vocab_size)
  if num_pauses == 0:
    return tokens.copy()
  gaps = length + 1
  if replace:
    points = rng.integers(0, gaps, size=(n, num_pauses))
  else:
    points = np.argsort(rng.random((n, gaps)), axis=1)[:, :num_pauses]
  counts = np.zeros((n, gaps), np.int64)
  np.add.at(counts, (np.repeat(np.arange(n), num_pauses), points.reshape(-1)), 1)
  # Token j lands after itself, after the pauses of gaps 0 .. j (those inserted before it).
  new_index = np.arange(length)[None, :] + np.cumsum(counts[:, :length], axis=1)
  out = np.full((n, length), pause_id, tokens.dtype)
  rows, cols = np.nonzero(new_index < length)
  out[rows, new_index[rows, cols]] = tokens[rows, cols]
  return out


def pretrain_batch(tokens: np.ndarray, num_pauses: int, rng: np.random.Generator, *,
                   pause_id: int = PAUSE_ID, replace: bool = True,
                   pad_id: int | None = 0) -> dict[str, np.ndarray]:
  """{'tokens', 'weights'} for rows (N, L + 1): pauses inserted, no loss where the target is a
  <pause> (or padding)."""
  rows = insert_pauses(tokens, num_pauses, rng, pause_id=pause_id, replace=replace)
  exclude = (pause_id,) if pad_id is None else (pause_id, pad_id)
  return {'tokens': rows.astype(np.int32), 'weights': lm.weights_for_targets(rows, exclude=exclude)}


# ---------------------------------------------------------------------------------------------
# Pause-finetuning and pause-inference.
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Delay:
  """How the answer is delayed: num_pauses tokens `token` after ('append') or before
  ('prepend') the prefix. token = PAUSE_ID for pauses, FILLER_ID for the '.' control."""
  num_pauses: int = 0
  position: str = 'append'
  token: int = PAUSE_ID

  def __post_init__(self):
    if self.position not in ('append', 'prepend'):
      raise PauseError(f"Delay position {self.position!r}: use 'append' or 'prepend'.")
    if isinstance(self.num_pauses, bool) or self.num_pauses < 0:
      raise PauseError(f'Delay num_pauses={self.num_pauses!r} is negative.')

  def apply(self, prefix: np.ndarray) -> np.ndarray:
    delay = np.full(self.num_pauses, self.token, np.int32)
    parts = (prefix, delay) if self.position == 'append' else (delay, prefix)
    return np.concatenate([np.asarray(p, np.int32) for p in parts])


def _check_delay(delay: Delay, length: int, name: str, vocab_size: int) -> None:
  check_count(delay.num_pauses, length, name)
  if delay.token != FILLER_ID and delay.num_pauses:
    check_pause_id(delay.token, vocab_size)


def finetune_batch(prefixes: Sequence[np.ndarray], targets: Sequence[np.ndarray], delay: Delay,
                   length: int, *, eos_id: int | None = 1,
                   vocab_size: int = loader.BYTE_VOCAB_SIZE) -> dict[str, np.ndarray]:
  """Rows prefix + <pause> x M_ft + target (+ EOS), right-padded to length + 1; loss on the
  target (and its EOS) only. A row that does not fit is an error, not silently cut."""
  _check_delay(delay, length, 'num_pauses (M_ft)', vocab_size)
  if len(prefixes) != len(targets) or not len(prefixes):
    raise PauseError(f'{len(prefixes)} prefixes and {len(targets)} targets: expected the same '
                     'number, at least one.')
  tokens = np.zeros((len(prefixes), length + 1), np.int32)
  weights = np.zeros((len(prefixes), length), np.float32)
  for i, (prefix, target) in enumerate(zip(prefixes, targets)):
    prompt = delay.apply(prefix)
    answer = np.asarray(target, np.int32)
    if eos_id is not None:
      answer = np.append(answer, eos_id)
    row = np.concatenate([prompt, answer])
    if len(row) > length + 1:
      raise PauseError(f'Example {i}: prompt {len(prompt)} (with {delay.num_pauses} pauses) + '
                       f'answer {len(answer)} tokens exceed length + 1 = {length + 1}.')
    tokens[i, :len(row)] = row
    weights[i, len(prompt) - 1:len(row) - 1] = 1.0   # targets = the answer's tokens
  return {'tokens': tokens, 'weights': weights}


def inference_prompt(prefix: np.ndarray, num_pauses: int, *, position: str = 'append',
                     pause_id: int = PAUSE_ID, max_length: int | None = None,
                     vocab_size: int = loader.BYTE_VOCAB_SIZE) -> np.ndarray:
  """prefix + <pause> x M_inf: decoding starts after the last pause (a pause is never generated:
  the model's readout has no <pause>)."""
  delay = Delay(num_pauses, position, pause_id)
  if max_length is not None:
    check_count(num_pauses, max_length, 'num_pauses (M_inf)')
    if len(prefix) + num_pauses > max_length:
      raise PauseError(f'A prompt of {len(prefix)} tokens with {num_pauses} pauses exceeds the '
                       f'model\'s {max_length} positions.')
  elif num_pauses < 0:
    raise PauseError(f'num_pauses (M_inf)={num_pauses} is negative.')
  if num_pauses:
    check_pause_id(pause_id, vocab_size)
  return delay.apply(np.asarray(prefix, np.int32))


# ---------------------------------------------------------------------------------------------
# The four configurations.
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Setting:
  """One of the paper's configurations: which pretrained model, and the fine-tuning delay."""
  name: str
  pause_pretrained: bool
  finetune_pauses: bool


CONFIGURATIONS = {
    'StdPT_StdFT': Setting('StdPT_StdFT', False, False),
    'StdPT_PauseFT': Setting('StdPT_PauseFT', False, True),
    'PausePT_StdFT': Setting('PausePT_StdFT', True, False),
    'PausePT_PauseFT': Setting('PausePT_PauseFT', True, True),
}


def configuration(name: str) -> Setting:
  if name not in CONFIGURATIONS:
    raise PauseError(f'Unknown configuration {name!r}; use one of {sorted(CONFIGURATIONS)}.')
  return CONFIGURATIONS[name]

"""Pause tokens (Goyal et al., 2023): pause-pretraining, pause-finetuning, pause-inference.

A <pause> is one token with its own embedding, outside the byte vocabulary (by default id 259 =
common.data.loader.BYTE_VOCAB_SIZE, TransformerLM(num_special_tokens=1)); the model never predicts
it (the readout covers the byte ids only). Every function here checks ids against the model's
(vocab_size, num_special_tokens): the pause id must be one of its special ids [vocab_size,
vocab_size + num_special_tokens), prefixes and targets ordinary ids [0, vocab_size), pretraining
rows ids the model has. So no id that is not the pause reaches the model as one: under jit the
model cannot check its ids, and reads an id past its special ids as its last special token.

    rows = insert_pauses(tokens, num_pauses=6, rng=rng)       # pretraining: (N, L + 1) -> same shape
    batch = finetune_batch(prefixes, targets, Delay(8), length=48)
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


def _whole(value) -> bool:
  return not isinstance(value, bool) and isinstance(value, (int, np.integer))


def check_pause_id(pause_id: int, vocab_size: int = loader.BYTE_VOCAB_SIZE,
                   num_special_tokens: int = 1) -> int:
  """The pause id must be one of the model's special ids [vocab_size, vocab_size + n): an id
  inside the vocabulary would be an ordinary token, and one past the special ids has no embedding
  of its own (TransformerLM would read it as another special token, or NaN)."""
  if not _whole(num_special_tokens) or num_special_tokens < 1:
    raise PauseError(f'num_special_tokens={num_special_tokens!r}: a <pause> needs the model to '
                     'have at least one special token (TransformerLM(num_special_tokens=1)).')
  try:
    pause_id = lm.check_special_id(pause_id, vocab_size, name='<pause>')
  except (lm.VocabularyError, TypeError, ValueError) as e:
    raise PauseError(str(e)) from e
  if pause_id >= vocab_size + num_special_tokens:
    raise PauseError(
        f'<pause> id {pause_id} is outside the model\'s special ids [{vocab_size}, '
        f'{vocab_size + num_special_tokens}) (vocab_size {vocab_size} + num_special_tokens '
        f'{num_special_tokens}): it has no embedding of its own. Use {vocab_size} (PAUSE_ID) or '
        'raise num_special_tokens.')
  return pause_id


def check_count(num: int, length: int, name: str) -> int:
  """0 <= num < length, a whole number."""
  if not _whole(num):
    raise PauseError(f'{name}={num!r}: expected a whole number of pauses.')
  if num < 0:
    raise PauseError(f'{name}={num} is negative.')
  if num >= length:
    raise PauseError(f'{name}={num} pauses do not fit a sequence of length {length}: at least '
                     'one real token must remain (use fewer pauses than the length).')
  return int(num)


def check_ids(ids: np.ndarray, limit: int, what: str) -> None:
  """Every id in [0, limit), else the first bad one named by its index."""
  ids = np.asarray(ids)
  if ids.size and not np.issubdtype(ids.dtype, np.integer):
    raise PauseError(f'{what}: ids must be integers, got dtype {ids.dtype}.')
  bad = (ids < 0) | (ids >= limit)
  if bad.any():
    where = tuple(int(i) for i in np.argwhere(bad)[0])
    raise PauseError(f'{what}: id {int(ids[where])} at index {where} is outside [0, {limit}). '
                     'Text tokens are ordinary ids; the <pause> goes in through pause_id.')


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
                  vocab_size: int = loader.BYTE_VOCAB_SIZE,
                  num_special_tokens: int = 1) -> np.ndarray:
  """Inserts num_pauses <pause> tokens at uniformly random places in each row, trimmed back.

  tokens: (N, T) ids. Each row draws num_pauses insertion points among its T + 1 gaps (before
  token 0 ... after token T - 1): with `replace=True` independently (several pauses can stack in
  one gap, as the public injection script does), else distinct gaps. The row grows to
  T + num_pauses and is cut back to its first T tokens: the tokens pushed past the end are lost.
  The rows' ids must be the model's, [0, vocab_size + num_special_tokens).
  """
  tokens = np.asarray(tokens)
  if tokens.ndim != 2:
    raise PauseError(f'tokens must be (rows, length), got shape {tokens.shape}.')
  n, length = tokens.shape
  check_count(num_pauses, length, 'num_pauses (M_pt)')
  check_pause_id(pause_id, vocab_size, num_special_tokens)
  check_ids(tokens, vocab_size + num_special_tokens, 'pretraining rows')
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
                   pad_id: int | None = 0, vocab_size: int = loader.BYTE_VOCAB_SIZE,
                   num_special_tokens: int = 1) -> dict[str, np.ndarray]:
  """{'tokens', 'weights'} for rows (N, L + 1): pauses inserted, no loss where the target is a
  <pause> (or padding)."""
  rows = insert_pauses(tokens, num_pauses, rng, pause_id=pause_id, replace=replace,
                       vocab_size=vocab_size, num_special_tokens=num_special_tokens)
  exclude = (pause_id,) if pad_id is None else (pause_id, pad_id)
  return {'tokens': rows.astype(np.int32), 'weights': lm.weights_for_targets(rows, exclude=exclude)}


@dataclasses.dataclass(frozen=True)
class PauseRows:
  """`pretrain_batch` on one streamed row: the transform of common.data.stream.StreamIterator
  that pause-pretrains on rows read batch by batch (the pauses of row i drawn from the stream's
  RNG for (seed, epoch, i)). An example {'tokens': (L + 1,), ...} becomes {'tokens': (L + 1,),
  'weights': (L,)}: pauses inserted and trimmed back, no loss where the target is a <pause> or
  padding, exactly as pretrain_batch makes the rows of a host array."""
  num_pauses: int
  replace: bool = True
  pause_id: int = PAUSE_ID
  pad_id: int | None = 0
  vocab_size: int = loader.BYTE_VOCAB_SIZE
  num_special_tokens: int = 1

  def __post_init__(self):
    check_pause_id(self.pause_id, self.vocab_size, self.num_special_tokens)
    if not _whole(self.num_pauses) or self.num_pauses < 0:
      raise PauseError(f'PauseRows num_pauses={self.num_pauses!r}: expected a whole number of '
                       'pauses (an int >= 0).')

  def __call__(self, example, rng: np.random.Generator) -> dict[str, np.ndarray]:
    tokens = np.asarray(example['tokens'])
    if tokens.ndim != 1:
      raise PauseError(f'PauseRows takes one row (length + 1,) per example, got shape '
                       f'{tokens.shape}.')
    out = pretrain_batch(tokens[None], self.num_pauses, rng, pause_id=self.pause_id,
                         replace=self.replace, pad_id=self.pad_id, vocab_size=self.vocab_size,
                         num_special_tokens=self.num_special_tokens)
    return {'tokens': out['tokens'][0], 'weights': out['weights'][0]}


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
    if not _whole(self.num_pauses):
      raise PauseError(f'Delay num_pauses={self.num_pauses!r}: expected a whole number of '
                       'pauses (an int >= 0).')
    if self.num_pauses < 0:
      raise PauseError(f'Delay num_pauses={self.num_pauses!r} is negative.')
    if not _whole(self.token) or self.token < 0:
      raise PauseError(f'Delay token={self.token!r}: expected a token id (an int >= 0): '
                       'PAUSE_ID, or FILLER_ID for the filler control.')

  def apply(self, prefix: np.ndarray) -> np.ndarray:
    delay = np.full(self.num_pauses, self.token, np.int32)
    parts = (prefix, delay) if self.position == 'append' else (delay, prefix)
    return np.concatenate([np.asarray(p, np.int32) for p in parts])


def _check_delay(delay: Delay, length: int, name: str, vocab_size: int,
                 num_special_tokens: int) -> None:
  if not isinstance(delay, Delay):
    raise PauseError(f'delay={delay!r}: expected a pause.Delay (e.g. Delay(8)).')
  check_count(delay.num_pauses, length, name)
  if delay.token != FILLER_ID and delay.num_pauses:
    check_pause_id(delay.token, vocab_size, num_special_tokens)


def finetune_batch(prefixes: Sequence[np.ndarray], targets: Sequence[np.ndarray], delay: Delay,
                   length: int, *, eos_id: int | None = 1,
                   vocab_size: int = loader.BYTE_VOCAB_SIZE,
                   num_special_tokens: int = 1) -> dict[str, np.ndarray]:
  """Rows prefix + <pause> x M_ft + target (+ EOS), right-padded to length + 1; loss on the
  target (and its EOS) only. A row that does not fit, or that would have no loss position (an
  empty prompt: nothing to predict the answer's first token from; an empty answer without EOS),
  is an error naming the row, not silently cut or left without loss. Prefix and target ids must be
  ordinary ids [0, vocab_size)."""
  _check_delay(delay, length, 'num_pauses (M_ft)', vocab_size, num_special_tokens)
  if len(prefixes) != len(targets) or not len(prefixes):
    raise PauseError(f'{len(prefixes)} prefixes and {len(targets)} targets: expected the same '
                     'number, at least one.')
  tokens = np.zeros((len(prefixes), length + 1), np.int32)
  weights = np.zeros((len(prefixes), length), np.float32)
  for i, (prefix, target) in enumerate(zip(prefixes, targets)):
    check_ids(np.asarray(prefix).reshape(-1), vocab_size, f'Example {i} prefix')
    check_ids(np.asarray(target).reshape(-1), vocab_size, f'Example {i} target')
    prompt = delay.apply(prefix)
    answer = np.asarray(target, np.int32).reshape(-1)
    if eos_id is not None:
      answer = np.append(answer, eos_id)
    if not len(prompt):
      raise PauseError(f'Example {i}: the prefix is empty and the delay adds no token '
                       f'({delay.num_pauses} pauses), so the answer\'s first token has no position '
                       'to be predicted from: the row would have no loss position. Give it a '
                       'prefix (or pauses).')
    if not len(answer):
      raise PauseError(f'Example {i}: the target is empty and eos_id is None: the row would have '
                       'no loss position.')
    row = np.concatenate([prompt, answer])
    if len(row) > length + 1:
      raise PauseError(f'Example {i}: prompt {len(prompt)} (with {delay.num_pauses} pauses) + '
                       f'answer {len(answer)} tokens exceed length + 1 = {length + 1}.')
    tokens[i, :len(row)] = row
    weights[i, len(prompt) - 1:len(row) - 1] = 1.0   # targets = the answer's tokens
  return {'tokens': tokens, 'weights': weights}


def inference_prompt(prefix: np.ndarray, num_pauses: int, *, position: str = 'append',
                     pause_id: int = PAUSE_ID, max_length: int | None = None,
                     vocab_size: int = loader.BYTE_VOCAB_SIZE,
                     num_special_tokens: int = 1) -> np.ndarray:
  """prefix + <pause> x M_inf: decoding starts after the last pause (a pause is never generated:
  the model's readout has no <pause>). An empty prompt (empty prefix, no pause) is refused."""
  delay = Delay(num_pauses, position, pause_id)
  prefix = np.asarray(prefix).reshape(-1)
  check_ids(prefix, vocab_size, 'prefix')
  if not len(prefix) and not num_pauses:
    raise PauseError('An empty prefix with 0 pauses is an empty prompt: decoding needs at least '
                     'one token to predict from.')
  if max_length is not None:
    check_count(num_pauses, max_length, 'num_pauses (M_inf)')
    if len(prefix) + num_pauses > max_length:
      raise PauseError(f'A prompt of {len(prefix)} tokens with {num_pauses} pauses exceeds the '
                       f'model\'s {max_length} positions.')
  elif num_pauses < 0:
    raise PauseError(f'num_pauses (M_inf)={num_pauses} is negative.')
  if num_pauses:
    check_pause_id(pause_id, vocab_size, num_special_tokens)
  return delay.apply(prefix.astype(np.int32))


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

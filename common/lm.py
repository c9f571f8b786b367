"""Language-model inputs: a byte vocabulary with special tokens outside it, and batches that carry
their own loss masks.

    vocab = lm.Vocabulary(special=('<pause>',))     # ids 0 pad, 1 eos, 2 unk, 3..258 bytes, 259 <pause>
    model = TransformerLM(**vocab.model_fields(), ...)   # vocab_size=259, num_special_tokens=1
    loss_fn = lm.make_loss_fn(model)                 # for common.train.train

A batch is {'tokens': (B, L + 1) int32, 'weights': (B, L) float32}: the model reads tokens[:, :-1],
predicts tokens[:, 1:], and weights[b, i] is the loss weight of the target tokens[b, i + 1]
(0 for padding, for a prompt in fine-tuning, for a target that is a special token). The loss is
sum(w * ce) / sum(w): a mask is data, so one loss serves pretraining, fine-tuning and padding.
Targets whose weight is 0 may be any id (a special token, beyond the readout): they are read as
0 before the cross-entropy, so they cannot turn the loss NaN.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import optax

from common.data import loader


class VocabularyError(ValueError):
  """A special token that collides with the vocabulary, or a name the vocabulary lacks."""


@dataclasses.dataclass(frozen=True)
class Vocabulary:
  """Byte-level ids (seqio ByteVocabulary's layout) and named special tokens after them."""
  special: tuple[str, ...] = ()
  base_size: int = loader.BYTE_VOCAB_SIZE

  def __post_init__(self):
    if len(set(self.special)) != len(self.special):
      raise VocabularyError(f'Special tokens repeat a name: {self.special}.')

  @property
  def size(self) -> int:
    return self.base_size + len(self.special)

  def id(self, name: str) -> int:
    if name not in self.special:
      raise VocabularyError(f'No special token {name!r}; this vocabulary has {self.special}.')
    return self.base_size + self.special.index(name)

  def model_fields(self) -> dict[str, int]:
    """TransformerLM's vocab_size and num_special_tokens."""
    return {'vocab_size': self.base_size, 'num_special_tokens': len(self.special)}

  def encode(self, text: str) -> np.ndarray:
    return np.frombuffer(text.encode('utf-8'), np.uint8).astype(np.int32) + loader.BYTE_OFFSET

  def decode(self, ids) -> str:
    """Bytes as text, special tokens as their names; pad, eos and unk dropped."""
    out, run = [], []
    for i in np.asarray(ids).reshape(-1).tolist():
      if i >= self.base_size:
        out.append(bytes(run).decode('utf-8', errors='replace'))
        run = []
        out.append(self.special[i - self.base_size] if i < self.size else f'<{i}?>')
      elif i >= loader.BYTE_OFFSET:
        run.append(i - loader.BYTE_OFFSET)
    out.append(bytes(run).decode('utf-8', errors='replace'))
    return ''.join(out)


def check_special_id(token_id: int, base_size: int, name: str = 'special token') -> int:
  """A special id must lie outside [0, base_size): an id inside would alias an ordinary token."""
  if isinstance(token_id, bool) or int(token_id) != token_id:
    raise VocabularyError(f'{name} id {token_id!r}: expected a whole number.')
  if 0 <= token_id < base_size:
    raise VocabularyError(f'{name} id {token_id} is inside the vocabulary [0, {base_size}): it '
                          'would be the same token as an ordinary one. Give it its own id >= '
                          f'{base_size} (TransformerLM(num_special_tokens=...)).')
  if token_id < 0:
    raise VocabularyError(f'{name} id {token_id} is negative.')
  return int(token_id)


def next_token_losses(logits, tokens, weights):
  """Per-example (sum of w * ce, sum of w) for logits (B, L, V) of tokens[:, :-1]."""
  targets = tokens[:, 1:]
  weights = weights.astype(jnp.float32)
  safe = jnp.where(weights > 0, targets, 0)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, safe)
  return jnp.sum(ce * weights, axis=-1), jnp.sum(weights, axis=-1)


def weighted_loss(logits, tokens, weights):
  """sum(w * ce) / sum(w) over the batch (0 when no target has weight)."""
  total, count = next_token_losses(logits, tokens, weights)
  return jnp.sum(total) / jnp.maximum(jnp.sum(count), 1.0)


def make_loss_fn(model, *, per_example: bool = False):
  """common.train's loss_fn for batches {'tokens', 'weights'}; per_example=True gives common.
  ensemble's (each example's weighted mean over its targets, shape (B,))."""

  def loss_fn(params, model_state, batch, rng):
    del rng
    tokens = batch['tokens']
    weights = batch.get('weights')
    if weights is None:
      weights = jnp.ones(tokens[:, 1:].shape, jnp.float32)
    logits = model.apply({'params': params}, tokens[:, :-1])
    if per_example:
      total, count = next_token_losses(logits, tokens, weights)
      return total / jnp.maximum(count, 1.0), ({}, model_state)
    total, count = next_token_losses(logits, tokens, weights)
    accuracy = jnp.sum(jnp.where(weights > 0, logits.argmax(-1) == tokens[:, 1:], False)) / (
        jnp.maximum(jnp.sum(count), 1.0))
    return (jnp.sum(total) / jnp.maximum(jnp.sum(count), 1.0),
            ({'token_accuracy': accuracy}, model_state))

  return loss_fn


def weights_for_targets(tokens: np.ndarray, *, exclude: tuple[int, ...] = (0,)) -> np.ndarray:
  """(N, L) float32 weights for rows (N, L + 1): 0 where the target is one of `exclude`."""
  targets = np.asarray(tokens)[:, 1:]
  return (~np.isin(targets, np.asarray(exclude))).astype(np.float32)


"""Autoregressive decoding for TransformerLM with a KV cache: greedy and sampled, under one jit.

    out = decoding.generate(model, params, prompts, max_new_tokens=8)          # greedy
    out = decoding.generate(model, params, prompts, max_new_tokens=8, temperature=0.8,
                            rng=jax.random.key(0), top_k=20)                   # sampled
    out.tokens        # (B, max_new_tokens) int32; after `eos_id`, `pad_id`
    out.logits        # (B, max_new_tokens, vocab) with return_logits=True: each step's logits

`prompts` is a list of 1-D id sequences of different lengths (or a (B, P) array with
`prompt_lengths`). They sit right-padded in one (B, P) batch: the prefill runs the whole batch at
positions 0 .. P-1 (the plain forward pass, keys and values kept in the cache), row b's first new
token comes from its logits at lengths[b] - 1, and each step feeds one token per row at its own
position lengths[b] + t, overwriting the padding slots before any query can see them. So every row
decodes exactly as if it were alone, with every position encoding (absolute ones, rotary, additive
relative biases; see common.models.transformer): each step's logits equal re-running the full
forward pass on the prompt and the tokens so far (tests/common/test_decoding.py, each encoding).

Greedy and sampled decoding are one compiled program: `temperature` is an input (0: argmax), as
are the prompts and the RNG; `top_k` (0: all) and the sizes are static. Token ids may include the
model's special tokens (ids >= vocab_size, e.g. <pause>): they can be fed, never generated (the
readout has vocab_size outputs). Prompts longer than the cache or the position encoding, empty
prompts, ids outside the model's vocabulary, a temperature that is negative or not finite (NaN
would otherwise decode greedily without a word) and an `eos_id` the model cannot generate (outside
[0, vocab_size): no row would ever stop) are refused before any compute.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from common.models import transformer


class PromptError(ValueError):
  """A decoding request that cannot run as asked: prompts empty, too long or with ids outside the
  vocabulary; a bad temperature, top_k or eos_id."""


@dataclasses.dataclass
class DecodeOutput:
  tokens: np.ndarray                  # (B, max_new_tokens) int32
  logits: np.ndarray | None = None    # (B, max_new_tokens, vocab) float32 when asked for


def init_cache(model: transformer.TransformerLM, batch_size: int, length: int,
               dtype=None) -> dict[str, dict[str, jax.Array]]:
  """Zero keys and values: {'layer_i': {'key', 'value'}: (batch_size, length, heads, head_dim)}."""
  shape = (batch_size, length, model.num_heads, model.d_model // model.num_heads)
  zeros = lambda: jnp.zeros(shape, dtype or model.dtype)
  return {f'layer_{i}': {'key': zeros(), 'value': zeros()} for i in range(model.num_layers)}


def encoding_max_length(model: transformer.TransformerLM) -> int | None:
  """The longest sequence the model's position encoding represents (None: any)."""
  if model.encoding is None:
    return None
  return model.encoding(parent=None).max_length


def pad_prompts(prompts, prompt_lengths=None) -> tuple[np.ndarray, np.ndarray]:
  """(B, P) right-padded int32 ids and (B,) lengths from a list of sequences or a padded array."""
  if prompt_lengths is None:
    if isinstance(prompts, np.ndarray) and prompts.ndim == 2:
      rows = list(prompts)
    elif isinstance(prompts, (list, tuple)):
      rows = [np.asarray(p).reshape(-1) for p in prompts]
    else:
      raise PromptError('prompts: give a list of 1-D id sequences, or a (batch, length) array '
                        f'(with prompt_lengths for rows of different lengths); got {type(prompts)}.')
    if not rows:
      raise PromptError('No prompts: the batch is empty.')
    for r in rows:
      if r.size and not np.issubdtype(r.dtype, np.integer):
        raise PromptError(f'Prompt ids must be integers, got {r.dtype}.')
    lengths = np.array([len(r) for r in rows], np.int32)
    padded = np.zeros((len(rows), max(1, lengths.max())), np.int32)
    for b, r in enumerate(rows):
      padded[b, :len(r)] = r
  else:
    padded = np.asarray(prompts)
    lengths = np.asarray(prompt_lengths).astype(np.int32).reshape(-1)
    if padded.ndim != 2 or lengths.shape != padded.shape[:1]:
      raise PromptError(f'prompts {padded.shape} and prompt_lengths {lengths.shape}: expected '
                        '(batch, length) and (batch,).')
    if lengths.max(initial=0) > padded.shape[1]:
      raise PromptError(f'prompt_lengths up to {lengths.max()} exceed the {padded.shape[1]} '
                        'columns of prompts.')
  if not np.issubdtype(padded.dtype, np.integer):
    raise PromptError(f'Prompt ids must be integers, got {padded.dtype}.')
  empty = np.flatnonzero(lengths < 1)
  if len(empty):
    raise PromptError(f'Prompt(s) {empty[:10].tolist()} are empty: every row needs at least one '
                      'token to predict from.')
  return padded.astype(np.int32), lengths


def check_prompts(model: transformer.TransformerLM, padded: np.ndarray, lengths: np.ndarray,
                  max_new_tokens: int, cache_length: int) -> None:
  """Raises PromptError unless the prompts and the new tokens fit the cache and the encoding."""
  if isinstance(max_new_tokens, bool) or int(max_new_tokens) != max_new_tokens or max_new_tokens < 1:
    raise PromptError(f'max_new_tokens={max_new_tokens!r}: expected a whole number >= 1.')
  valid = np.arange(padded.shape[1])[None, :] < lengths[:, None]
  ids = padded[valid]
  limit = model.vocab_size + model.num_special_tokens
  bad = (ids < 0) | (ids >= limit)
  if bad.any():
    raise PromptError(f'Prompt id {int(ids[bad][0])} is outside the model\'s ids [0, {limit}) '
                      f'(vocab_size {model.vocab_size} + {model.num_special_tokens} special).')
  longest = int(lengths.max())
  if longest + max_new_tokens > cache_length:
    raise PromptError(f'The longest prompt ({longest} tokens) plus max_new_tokens={max_new_tokens} '
                      f'does not fit the cache of {cache_length} positions.')
  max_len = encoding_max_length(model)
  if max_len is not None and cache_length > max_len:
    raise PromptError(f'Decoding needs {cache_length} positions (prompt {padded.shape[1]} + '
                      f'{max_new_tokens} new, or cache_length) but the position encoding '
                      f'represents {max_len}.')


def check_sampling(model: transformer.TransformerLM, temperature, top_k: int,
                   eos_id: int | None) -> float:
  """The temperature as a float; raises PromptError for a value decoding would misread.

  A NaN temperature fails `temperature > 0` under jit and so decoded greedily, and an eos_id the
  readout cannot produce (>= vocab_size, or negative) never stopped a row: both are refused.
  """
  try:
    value = float(temperature)
  except (TypeError, ValueError):
    raise PromptError(f'temperature={temperature!r}: expected one number (0: greedy, > 0: '
                      'sample).') from None
  if isinstance(temperature, bool) or not math.isfinite(value) or value < 0:
    raise PromptError(f'temperature={temperature!r}: expected a finite number >= 0 (0: greedy, '
                      '> 0: sample from softmax(logits / temperature)).')
  if isinstance(top_k, bool) or top_k < 0 or top_k > model.vocab_size:
    raise PromptError(f'top_k={top_k!r}: expected 0 (all) .. vocab_size={model.vocab_size}.')
  if eos_id is not None:
    whole = isinstance(eos_id, (int, np.integer)) and not isinstance(eos_id, bool)
    if not whole or not 0 <= eos_id < model.vocab_size:
      raise PromptError(
          f'eos_id={eos_id!r}: expected an id in [0, vocab_size={model.vocab_size}), one the '
          'model can generate (special tokens and ids outside the vocabulary are never '
          'generated, so no row would stop).')
  return value


def choose_tokens(logits, rng, temperature, top_k: int = 0):
  """argmax where temperature <= 0, else a sample of softmax(logits / temperature) (top-k)."""
  greedy = jnp.argmax(logits, axis=-1)
  scaled = logits / jnp.maximum(temperature, 1e-6)
  if top_k:
    kth = jax.lax.top_k(scaled, top_k)[0][..., -1:]
    scaled = jnp.where(scaled < kth, -jnp.inf, scaled)
  sampled = jax.random.categorical(rng, scaled, axis=-1)
  return jnp.where(temperature > 0, sampled, greedy).astype(jnp.int32)


@functools.lru_cache(maxsize=64)
def _decoder(model, max_new_tokens: int, cache_length: int, top_k: int, return_logits: bool,
             eos_id: int | None, pad_id: int):
  """The jitted decode for one model and these static sizes (prompts, RNG, temperature traced)."""

  def decode(variables, prompts, lengths, rng, temperature):
    batch = prompts.shape[0]
    cache = init_cache(model, batch, cache_length)
    logits, cache = model.apply(variables, prompts, cache=cache)
    last = logits[jnp.arange(batch), lengths - 1]                          # (B, V)

    def step(carry, t):
      cache, last, rng, done = carry
      rng, sub = jax.random.split(rng)
      token = choose_tokens(last, sub, temperature, top_k)
      token = jnp.where(done, pad_id, token)
      if eos_id is not None:
        done = done | (token == eos_id)
      logits, cache = model.apply(variables, token[:, None], cache=cache,
                                  cache_index=lengths + t)
      out = (token, last) if return_logits else (token,)
      return (cache, logits[:, 0], rng, done), out

    carry = (cache, last, rng, jnp.zeros((batch,), bool))
    _, outs = jax.lax.scan(step, carry, jnp.arange(max_new_tokens))
    return tuple(o.swapaxes(0, 1) for o in outs)

  return jax.jit(decode)


def generate(model: transformer.TransformerLM, params: Any, prompts: Sequence[Any] | np.ndarray,
             prompt_lengths=None, *, max_new_tokens: int, temperature: float = 0.0,
             rng: jax.Array | None = None, top_k: int = 0, cache_length: int | None = None,
             eos_id: int | None = None, pad_id: int = 0,
             return_logits: bool = False) -> DecodeOutput:
  """Decodes max_new_tokens after each prompt (see the module docstring).

  cache_length: positions held (default: the longest prompt + max_new_tokens); a fixed value
  keeps one compiled program across batches of different prompt lengths.
  """
  padded, lengths = pad_prompts(prompts, prompt_lengths)
  if cache_length is None:
    cache_length = int(padded.shape[1]) + int(max_new_tokens)
  check_prompts(model, padded, lengths, max_new_tokens, cache_length)
  if padded.shape[1] > cache_length:  # padding columns past every prompt: drop them
    padded = padded[:, :int(lengths.max())]
  temperature = check_sampling(model, temperature, top_k, eos_id)
  if temperature > 0 and rng is None:
    raise PromptError('Sampling (temperature > 0) needs rng=jax.random.key(...).')
  rng = jax.random.key(0) if rng is None else rng
  fn = _decoder(model, int(max_new_tokens), int(cache_length), int(top_k), bool(return_logits),
                None if eos_id is None else int(eos_id), int(pad_id))
  variables = params if 'params' in params else {'params': params}
  outs = jax.device_get(fn(variables, jnp.asarray(padded), jnp.asarray(lengths), rng,
                           jnp.asarray(temperature, jnp.float32)))
  return DecodeOutput(tokens=np.asarray(outs[0]),
                      logits=np.asarray(outs[1]) if return_logits else None)

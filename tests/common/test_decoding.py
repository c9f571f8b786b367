"""KV-cache decoding (common.models.decoding) equals re-running the full forward pass, for every
position encoding in the codebase; special tokens; bad prompts refused before compute.

The encodings live in fire_pe (the paper that brought them); common/ never imports a paper, but
its tests check the platform against every encoding there is.
"""

import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common.models import decoding
from common.models import transformer
from fire_pe import encodings

VOCAB, SPECIAL = 20, 2
PROMPTS = [np.array([3, 4, 20, 5]), np.array([7]), np.array([1, 2, 3, 21, 21, 9, 10])]
NEW = 5


def _model(name, **overrides):
  fields = encodings.build(name, num_heads=4, train_length=32, fire={'init_threshold': 6.0})
  kwargs = dict(vocab_size=VOCAB, num_layers=2, d_model=16, num_heads=4, mlp_dim=32,
                num_special_tokens=SPECIAL, **fields)
  kwargs.update(overrides)
  return transformer.TransformerLM(**kwargs)


@functools.lru_cache(maxsize=None)
def _params(model):
  """Random parameters of the model's shapes (any parameters will do for equality, and random
  ones make zero-initialised tables such as T5's matter); numpy, so nothing compiles here."""
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8), jnp.int32))['params']
  rng = np.random.default_rng(2)
  return jax.tree.map(lambda s: (0.3 * rng.standard_normal(s.shape)).astype(s.dtype),
                      flax.linen.meta.unbox(shapes))


@functools.lru_cache(maxsize=None)
def _jitted_apply(model):
  return jax.jit(model.apply)


def _full_forward_logits(model, params, prompts, tokens):
  """For every row b and step t, the last logits of the full forward pass over prompt_b +
  tokens[b, :t]: each such sequence is run on its own (a row of one batch, zero-padded after its
  end; the model is causal, so what follows cannot change its last position)."""
  rows, where = [], []
  width = max(len(p) for p in prompts) + tokens.shape[1]
  for b, prompt in enumerate(prompts):
    for t in range(tokens.shape[1]):
      seq = np.concatenate([prompt, tokens[b, :t]])
      rows.append(np.pad(seq, (0, width - len(seq))))
      where.append(len(seq) - 1)
  logits = _jitted_apply(model)({'params': params}, jnp.asarray(np.stack(rows)))
  logits = np.asarray(logits)[np.arange(len(rows)), where]
  return logits.reshape(len(prompts), tokens.shape[1], -1)


# One of each kind of hook in the default run (an absolute table, rotary, fixed, learned and MLP
# biases; the shared FIRE-S below); sinusoids, Kerple, RoPE-PI and FIRE's ablations take the same
# paths and run with -m slow (each encoding costs a compile of its decoder).
DEFAULT = ('nope', 'learned_absolute', 'rope', 'alibi', 't5', 'fire')
CASES = [name if name in DEFAULT else pytest.param(name, marks=pytest.mark.slow)
         for name in encodings.ENCODINGS]


@pytest.mark.parametrize('name', CASES)
def test_cached_decoding_equals_full_forward_for_every_encoding(name):
  model = _model(name)
  params = _params(model)
  greedy = decoding.generate(model, params, PROMPTS, max_new_tokens=NEW, return_logits=True)
  expected = _full_forward_logits(model, params, PROMPTS, greedy.tokens)
  np.testing.assert_allclose(greedy.logits, expected, atol=2e-4, rtol=2e-4)
  np.testing.assert_array_equal(greedy.tokens, expected.argmax(-1))


@pytest.mark.parametrize('name', ['fire'])
def test_sampled_decoding_equals_full_forward(name):
  model = _model(name)
  params = _params(model)
  greedy = decoding.generate(model, params, PROMPTS, max_new_tokens=NEW, return_logits=True)
  compiled = decoding._decoder.cache_info().currsize
  # Sampled, through the same compiled program (temperature is an input).
  sampled = decoding.generate(model, params, PROMPTS, max_new_tokens=NEW, temperature=1.0,
                              rng=jax.random.key(3), return_logits=True)
  expected = _full_forward_logits(model, params, PROMPTS, sampled.tokens)
  np.testing.assert_allclose(sampled.logits, expected, atol=2e-4, rtol=2e-4)
  assert not np.array_equal(sampled.tokens, greedy.tokens)
  assert decoding._decoder.cache_info().currsize == compiled


def test_one_row_decodes_as_in_a_batch_of_other_lengths():
  model = _model('rope')
  params = _params(model)
  together = decoding.generate(model, params, PROMPTS, max_new_tokens=NEW)
  padded, lengths = decoding.pad_prompts(PROMPTS)
  for b in range(len(PROMPTS)):   # one row at a time, in one shape (one compile)
    alone = decoding.generate(model, params, padded[b:b + 1], lengths[b:b + 1],
                              max_new_tokens=NEW)
    np.testing.assert_array_equal(alone.tokens[0], together.tokens[b])


def test_blockwise_prefill_and_shared_encoding_match():
  model = _model('fire_s', attention='blockwise', block_size=4)
  params = _params(model)
  out = decoding.generate(model, params, PROMPTS, max_new_tokens=NEW, return_logits=True)
  expected = _full_forward_logits(model, params, PROMPTS, out.tokens)
  np.testing.assert_allclose(out.logits, expected, atol=2e-4, rtol=2e-4)


def test_sampling_follows_temperature_and_top_k():
  model = _model('nope')
  params = _params(model)
  prompts = [np.array([3, 4])] * 48
  greedy = decoding.generate(model, params, prompts, max_new_tokens=3)
  assert (greedy.tokens == greedy.tokens[0]).all()            # greedy: every row the same
  hot = decoding.generate(model, params, prompts, max_new_tokens=3, temperature=5.0,
                          rng=jax.random.key(0))
  assert len({tuple(r) for r in hot.tokens}) > 10              # sampling: rows differ
  top1 = decoding.generate(model, params, prompts, max_new_tokens=3, temperature=5.0,
                           rng=jax.random.key(0), top_k=1)
  np.testing.assert_array_equal(top1.tokens, greedy.tokens)    # top-1 sampling is greedy
  again = decoding.generate(model, params, prompts, max_new_tokens=3, temperature=5.0,
                            rng=jax.random.key(0))
  np.testing.assert_array_equal(again.tokens, hot.tokens)      # same key, same samples


def test_special_tokens_are_embedded_but_never_generated():
  model = _model('nope')
  params = _params(model)
  assert params['special_embed'].shape == (SPECIAL, 16)
  logits = jax.jit(model.apply)({'params': params}, jnp.array([[3, 20, 21]]))
  assert logits.shape == (1, 3, VOCAB)                          # readout: ordinary ids only
  other = jax.jit(model.apply)({'params': params}, jnp.array([[3, 21, 21]]))
  assert not np.allclose(logits[0, 1:], other[0, 1:])           # each special its own embedding
  out = decoding.generate(model, params, [np.array([20, 21, 20])] * 8, max_new_tokens=6,
                          temperature=3.0, rng=jax.random.key(1))
  assert out.tokens.max() < VOCAB
  with pytest.raises(ValueError, match='outside'):
    model.apply({'params': params}, jnp.array([[3, VOCAB + SPECIAL]]))


def test_model_without_special_tokens_keeps_its_parameters():
  model = transformer.TransformerLM(vocab_size=VOCAB, num_layers=1, d_model=16, num_heads=2)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
  assert 'special_embed' not in shapes['params']


def test_eos_stops_a_row_and_pads_it():
  model = _model('nope')
  params = _params(model)
  first = decoding.generate(model, params, PROMPTS, max_new_tokens=NEW).tokens
  eos = int(first[0, 1])
  out = decoding.generate(model, params, PROMPTS, max_new_tokens=NEW, eos_id=eos, pad_id=0)
  stop = int(np.argmax(first[0] == eos))
  assert (out.tokens[0, stop + 1:] == 0).all()
  np.testing.assert_array_equal(out.tokens[0, :stop + 1], first[0, :stop + 1])


@pytest.mark.parametrize('kwargs,match', [
    (dict(prompts=[np.array([3] * 10)], max_new_tokens=4, cache_length=12), 'does not fit'),
    (dict(prompts=[np.array([3]), np.array([], np.int32)], max_new_tokens=2), 'empty'),
    (dict(prompts=[np.array([3, VOCAB + SPECIAL])], max_new_tokens=2), 'outside'),
    (dict(prompts=[np.array([3, -1])], max_new_tokens=2), 'outside'),
    (dict(prompts=[np.array([3])], max_new_tokens=0), 'max_new_tokens'),
    (dict(prompts=[np.array([3])], max_new_tokens=2, temperature=1.0), 'rng'),
    (dict(prompts=[np.array([3.5])], max_new_tokens=2), 'integers'),
    (dict(prompts=np.zeros((2, 3), np.int32), prompt_lengths=[1, 4], max_new_tokens=2),
     'exceed'),
])
def test_bad_prompts_are_refused_before_compute(kwargs, match):
  model = _model('nope')
  params = _params(model)
  prompts = kwargs.pop('prompts')
  with pytest.raises(decoding.PromptError, match=match):
    decoding.generate(model, params, prompts, **kwargs)


def test_prompt_longer_than_the_encoding_is_refused():
  model = _model('learned_absolute')   # a table of train_length = 32 positions
  params = _params(model)
  with pytest.raises(decoding.PromptError, match='represents 32'):
    decoding.generate(model, params, [np.arange(30) % VOCAB], max_new_tokens=5)


def test_a_step_takes_one_token_per_row():
  model = _model('nope')
  params = _params(model)
  cache = decoding.init_cache(model, 2, 8)
  with pytest.raises(ValueError, match='one token per row'):
    jax.eval_shape(lambda: model.apply({'params': params}, jnp.zeros((2, 2), jnp.int32),
                                       cache=cache, cache_index=jnp.zeros((2,), jnp.int32)))
  with pytest.raises(ValueError, match='do not fit the cache'):
    jax.eval_shape(lambda: model.apply({'params': params}, jnp.zeros((2, 9), jnp.int32),
                                       cache=cache))


@pytest.mark.parametrize('temperature', [float('nan'), float('inf'), -0.5, np.float32('nan'),
                                         True, 'hot', np.array([1.0, 2.0])])
def test_a_temperature_that_is_not_a_finite_number_at_least_zero_is_refused(temperature):
  """temperature=nan failed `temperature > 0` inside the jitted step and decoded greedily."""
  model = _model('nope')
  with pytest.raises(decoding.PromptError, match=r'temperature=.*expected .*number'):
    decoding.generate(model, _params(model), PROMPTS, max_new_tokens=2, temperature=temperature,
                      rng=jax.random.key(0))


@pytest.mark.parametrize('eos_id', [9999, VOCAB, VOCAB + 1, -1, 2.0, True])
def test_an_eos_id_the_model_cannot_generate_is_refused(eos_id):
  """eos_id=9999 (or a special token, which the readout never produces) never stopped a row."""
  model = _model('nope')
  with pytest.raises(decoding.PromptError, match=rf'eos_id={eos_id!r}: expected an id in '
                     rf'\[0, vocab_size={VOCAB}\)'):
    decoding.generate(model, _params(model), PROMPTS, max_new_tokens=2, eos_id=eos_id)


def test_the_sampling_arguments_are_checked_before_anything_compiles():
  model = _model('nope')
  assert decoding.check_sampling(model, 0, 0, VOCAB - 1) == 0.0
  assert decoding.check_sampling(model, np.float32(0.5), 3, np.int64(0)) == 0.5
  before = decoding._decoder.cache_info().misses
  with pytest.raises(decoding.PromptError, match='eos_id'):
    decoding.generate(model, _params(model), PROMPTS, max_new_tokens=3, eos_id=VOCAB)
  assert decoding._decoder.cache_info().misses == before

r"""Autoregressive decoding: the KV cache (common.models.decoding) against recomputing the prefix,
and what M pauses per prompt cost.

    taskset -c 0 python -m benchmarks.decoding [--prompts=64,128,256,512] [--new=32]
        [--pauses=0,8,32,64] [--layers=4 --d_model=256]

Pinned to one core with one XLA thread; CPU-seconds of the compiled programs (compilation
excluded, best of --repeats). A batch of --batch prompts of P tokens decodes --new tokens greedily:

  kv          decoding.generate: one prefill of P positions, then one position per step
  recompute   the plain forward pass over the whole (P + new) buffer at every step, the token at
              the current position read out and written back: what decoding without a cache does
              (the buffer has a fixed size so there is one compiled program; a prefix that grows
              costs about half as much on average at new << P, so `speedup` errs small by < 2x
              only when new ~ P)
  pauses      `kv` on prompts of 128 tokens followed by M <pause> tokens: the cost of M pauses is
              M more prefill positions (and M more cache slots each step reads)

Each row: tokens per CPU-second (batch x new / CPU-seconds) and the ratio kv / recompute.
"""

import os

os.environ.setdefault('XLA_FLAGS',
                      '--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1')
os.environ.setdefault('JAX_NUM_CPU_DEVICES', '1')

import argparse  # pylint: disable=g-import-not-at-top,g-bad-import-order
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import timing
from common.models import decoding
from common.models import positions
from common.models import transformer

PAUSE_ID = 259  # the first id after the 259 byte ids (pause.PAUSE_ID)


def make_model(args, max_length: int) -> transformer.TransformerLM:
  encoding = positions.build('rope', num_heads=args.heads, train_length=max_length)['encoding']
  return transformer.TransformerLM(vocab_size=PAUSE_ID, num_special_tokens=1,
                                   num_layers=args.layers,
                                   d_model=args.d_model, num_heads=args.heads,
                                   mlp_dim=4 * args.d_model, encoding=encoding)


@functools.lru_cache(maxsize=None)
def recompute_decoder(model, prompt_length: int, new: int):
  """Greedy decoding without a cache: the full forward pass over the buffer at every step."""

  def decode(variables, prompts):
    batch = prompts.shape[0]
    buffer = jnp.zeros((batch, prompt_length + new), jnp.int32).at[:, :prompt_length].set(prompts)

    def step(buffer, t):
      logits = model.apply(variables, buffer)
      token = jnp.argmax(logits[:, prompt_length + t - 1], axis=-1).astype(jnp.int32)
      return buffer.at[:, prompt_length + t].set(token), token

    _, tokens = jax.lax.scan(step, buffer, jnp.arange(new))
    return tokens.T

  return jax.jit(decode)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--prompts', default='64,128,256,512')
  parser.add_argument('--pauses', default='0,8,32,64')
  parser.add_argument('--new', type=int, default=32)
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--layers', type=int, default=4)
  parser.add_argument('--d_model', type=int, default=256)
  parser.add_argument('--heads', type=int, default=4)
  parser.add_argument('--repeats', type=int, default=3)
  args = parser.parse_args()
  prompt_lengths = [int(p) for p in args.prompts.split(',')]
  pause_counts = [int(m) for m in args.pauses.split(',')]
  max_length = max(max(prompt_lengths), 128 + max(pause_counts)) + args.new
  model = make_model(args, max_length)
  rng = np.random.default_rng(0)
  params = model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
  tokens = args.batch * args.new
  rows = []
  for p in prompt_lengths:
    prompts = rng.integers(3, PAUSE_ID, (args.batch, p)).astype(np.int32)
    kv = timing.cpu_seconds(
        lambda: decoding.generate(model, params, prompts, max_new_tokens=args.new).tokens,
        args.repeats)
    fn = recompute_decoder(model, p, args.new)
    recompute = timing.cpu_seconds(lambda: fn(params, jnp.asarray(prompts)), args.repeats)
    same = np.array_equal(decoding.generate(model, params, prompts, max_new_tokens=args.new).tokens,
                          np.asarray(fn(params, jnp.asarray(prompts))))
    rows.append({'arm': 'kv_vs_recompute', 'prompt': p, 'kv_tokens_per_cpu_s': tokens / kv,
                 'recompute_tokens_per_cpu_s': tokens / recompute, 'speedup': recompute / kv,
                 'same_tokens': bool(same)})
    print(json.dumps(rows[-1]), flush=True)
  base = None
  for m in pause_counts:
    prompts = np.concatenate([rng.integers(3, PAUSE_ID, (args.batch, 128)),
                              np.full((args.batch, m), PAUSE_ID)], axis=1).astype(np.int32)
    kv = timing.cpu_seconds(
        lambda: decoding.generate(model, params, prompts, max_new_tokens=args.new).tokens,
        args.repeats)
    base = kv if base is None else base
    rows.append({'arm': 'pauses', 'prompt': 128, 'pauses': m, 'kv_tokens_per_cpu_s': tokens / kv,
                 'cost_vs_first': kv / base})
    print(json.dumps(rows[-1]), flush=True)
  print(json.dumps({'model': {'layers': args.layers, 'd_model': args.d_model,
                              'heads': args.heads}, 'batch': args.batch, 'new': args.new,
                    'rows': rows}))


if __name__ == '__main__':
  main()

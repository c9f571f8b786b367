r"""The MRF layer's cost (muse_mrf.kernels.mean_field) against one call of a masked-token backbone.

    taskset -c 1 python -m benchmarks.mrf [--layers=24 --d_model=768 --repeats=3]

One pinned core, one XLA thread, float32, CPU-seconds (process time; each arm's minimum over the
repeats), batch 1 (one image), forward only, compiled ahead. Arms on a 16 x 16 token grid, 3 x 3
window, 5 mean-field iterations, every position unknown:

  backbone         common.models.MaskedTokenTransformer at MaskGIT's ImageNet size by default
                   (24 layers, d 768, 16 heads, MLP 3072, codebook 1024, 1000 classes)
  dense_512        V = 512, dense (V, V) compatibility
  lowrank_512      V = 512, A B^T with r = --rank (64)
  lowrank_8192     V = 8192 (Muse's codebook), r = --rank
  dense_8192       V = 8192 dense (V^2 = 67M entries; --dense_8192 to include it: slow)

Prints one JSON line per arm (seconds, GFLOP estimate, ratio to the backbone) and a summary. The
issue's target: the MRF layer <= 10% of a backbone call.
"""

import os

os.environ.setdefault('XLA_FLAGS',
                      '--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1')
os.environ.setdefault('JAX_NUM_CPU_DEVICES', '1')

import argparse  # pylint: disable=g-import-not-at-top,g-bad-import-order
import json

import jax
import jax.numpy as jnp

from benchmarks import timing
from common.models import transformer
from muse_mrf import kernels


def backbone_setup(args, batch: int = 1):
  """(a thunk that runs one compiled backbone call on `batch` all-masked images, its parameters);
  shared with the GPU suite (benchmarks/suite.py)."""
  model = transformer.MaskedTokenTransformer(
      codebook_size=args.codebook, num_classes=1000, num_tokens=args.grid ** 2,
      num_layers=args.layers, d_model=args.d_model, num_heads=args.heads,
      mlp_dim=4 * args.d_model)
  tokens = jnp.full((batch, args.grid ** 2), model.mask_id, jnp.int32)
  labels = jnp.zeros((batch,), jnp.int32)
  params = jax.jit(model.init)(jax.random.key(0), tokens[:1], labels[:1])
  call = jax.jit(model.apply).lower(params, tokens, labels).compile()
  return lambda: call(params, tokens, labels), params


def backbone_arm(args):
  run, params = backbone_setup(args)
  n_params = sum(x.size for x in jax.tree.leaves(params))
  seconds = timing.cpu_seconds(run, args.repeats)
  return {'arm': 'backbone', 'seconds': seconds, 'params': int(n_params),
          'gflop': round(2 * n_params * (args.grid ** 2 + 1) / 1e9, 2)}


def mrf_setup(args, vocab: int, rank: int | None, batch: int = 1):
  """(a thunk that runs the compiled mean-field layer on `batch` grids of V = vocab logits, its
  FLOPs: the compatibility products, 2 V^2 (dense) or 4 V r (low rank) per position and
  iteration); shared with the GPU suite."""
  key = jax.random.key(1)
  logits = jax.random.normal(key, (batch, args.grid, args.grid, vocab))
  spatial = jnp.full((1, 3, 3), 0.125)
  if rank is None:
    compat = jax.random.normal(key, (1, vocab, vocab)) * 0.01
    fn = jax.jit(lambda x, c: kernels.mean_field(x, spatial, compat=c, iterations=args.iterations))
    compiled = fn.lower(logits, compat).compile()
    run = lambda: compiled(logits, compat)
    flop = 2 * vocab * vocab
  else:
    a = jax.random.normal(key, (1, vocab, rank)) * 0.01
    b = jax.random.normal(jax.random.key(2), (1, vocab, rank)) * 0.01
    fn = jax.jit(lambda x, a, b: kernels.mean_field(x, spatial, low_rank=(a, b),
                                                    iterations=args.iterations))
    compiled = fn.lower(logits, a, b).compile()
    run = lambda: compiled(logits, a, b)
    flop = 4 * vocab * rank
  return run, flop * batch * args.grid ** 2 * args.iterations


def mrf_arm(args, vocab: int, rank: int | None):
  run, flop = mrf_setup(args, vocab, rank)
  seconds = timing.cpu_seconds(run, args.repeats)
  name = f'{"dense" if rank is None else "lowrank"}_{vocab}'
  return {'arm': name, 'seconds': seconds, 'gflop': round(flop / 1e9, 3),
          'per_iteration_ms': round(1e3 * seconds / args.iterations, 3)}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--layers', type=int, default=24)
  parser.add_argument('--d_model', type=int, default=768)
  parser.add_argument('--heads', type=int, default=16)
  parser.add_argument('--codebook', type=int, default=1024)
  parser.add_argument('--grid', type=int, default=16)
  parser.add_argument('--iterations', type=int, default=5)
  parser.add_argument('--rank', type=int, default=64)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--dense_8192', action='store_true')
  args = parser.parse_args()
  rows = [backbone_arm(args)]
  print(json.dumps(rows[-1]), flush=True)
  arms = [(512, None), (512, args.rank), (8192, args.rank)]
  if args.dense_8192:
    arms.append((8192, None))
  for vocab, rank in arms:
    rows.append(mrf_arm(args, vocab, rank))
    rows[-1]['ratio_to_backbone'] = round(rows[-1]['seconds'] / rows[0]['seconds'], 4)
    print(json.dumps(rows[-1]), flush=True)
  by = {r['arm']: r for r in rows}
  print(json.dumps({
      'target': 'MRF layer <= 0.10 of a backbone call',
      'holds': {r['arm']: r['ratio_to_backbone'] <= 0.10 for r in rows[1:]},
      'lowrank_speedup_at_512': round(by['dense_512']['seconds'] / by['lowrank_512']['seconds'],
                                      2)}), flush=True)


if __name__ == '__main__':
  main()

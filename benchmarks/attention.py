r"""Attention with FIRE's bias: naive against block-wise, forward + backward, time and memory.

    taskset -c 0 python -m benchmarks.attention [--lengths=512,2048,8192 --layers=4]

One pinned core, one XLA thread, B 8, H 8, D 64, causal; CPU-seconds of one jitted step that
computes the loss sum(out * cotangent) and its gradient with respect to q, k, v and the bias
parameters, through `--layers` attention calls on the same q, k, v (as in a model: per-layer
FIRE has one bias module per call, FIRE-S one for all). Each arm's minimum over the repeats.

  no_bias          naive attention, no bias (the baseline of the ratios)
  naive_fire       naive attention; FIRE's MLP evaluated on the whole L x L grid of every layer
  blockwise_none   the block-wise kernel, no bias
  blockwise_fire   the block-wise kernel, FIRE per layer (fire_pe.FIRE: a table of f over the
                   distances for blocks whose rows are all <= L_threshold; past it f per pair
                   through its piecewise-affine form, fire_pe.encodings.fire_piecewise)
  fire_s           the block-wise kernel, one FIRE shared by all layers (its table built once)
  fire_mlp         as blockwise_fire, but the MLP itself on every pair past the threshold (the
                   kernel before the piecewise form)
  dot_product_attention
                   jax.nn.dot_product_attention, no bias (not in the default arms): cuDNN's fused
                   kernel on a GPU (which takes bfloat16 inputs: cast them, `make_inputs`), XLA's
                   elsewhere (`fused_implementation`); the GPU suite's baseline

FIRE's threshold L is `--threshold_ratio` x L (the paper's public code: 512 at 2048, a quarter),
or `--threshold` when given; most rows are then past it and take the per-pair path.

Memory is XLA's account of the step (`memory_analysis()`: temporaries; arguments and outputs are
the same for all arms), compiled without running, so the naive arms' need at 8192 is reported even
though it does not fit in this machine's memory; such arms are not timed.
"""

import os

os.environ.setdefault('XLA_FLAGS',
                      '--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1')
os.environ.setdefault('JAX_NUM_CPU_DEVICES', '1')

import argparse  # pylint: disable=g-import-not-at-top,g-bad-import-order
import json

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import timing
from common.models import attention
from common.models import positions
from fire_pe import encodings


def _fire_naive_bias(params, q_start, k_start, q_len, k_len):
  """The straightforward FIRE bias: the MLP on every (i, j) (no distance table)."""
  i, _, rel = positions.relative(q_start, k_start, q_len, k_len)
  x = encodings.fire_inputs(i, rel, params['c'], params['threshold'], log_transform=True,
                            threshold=True, interpolate=True)
  return jnp.moveaxis(encodings.fire_mlp(params['mlp'], x), -1, 0)


def _fire_mlp_pairs_bias(params, q_start, k_start, q_len, k_len):
  """FIRE's bias as the kernel computed it before the piecewise form: the distance table for
  blocks within the threshold, the MLP on every pair past it."""
  _, _, rel = positions.relative(q_start, k_start, q_len, k_len)
  table = params['table']
  from_table = lambda: table[:, jnp.minimum(rel, table.shape[1] - 1)]
  full = jax.checkpoint(lambda: _fire_naive_bias(params, q_start, k_start, q_len, k_len))
  last_row = jnp.asarray(q_start + q_len - 1, jnp.float32)
  return jax.lax.cond(last_row <= params['threshold'], from_table, full)


def fused_implementation() -> str:
  """jax.nn.dot_product_attention's implementation here: 'cudnn' (fused) on a GPU, else 'xla'."""
  return 'cudnn' if jax.default_backend() == 'gpu' else 'xla'


def input_dtype(arm: str):
  """The arm's q, k, v dtype: bfloat16 for cuDNN's fused kernel (it takes no float32), else
  float32."""
  fused = arm == 'dot_product_attention' and fused_implementation() == 'cudnn'
  return jnp.bfloat16 if fused else jnp.float32


def make_inputs(batch, length, heads, dim, dtype=jnp.float32):
  """q, k, v and the loss' cotangent, (batch, length, heads, dim) standard normal."""
  rng = np.random.default_rng(length)
  shape = (batch, length, heads, dim)
  return [jnp.asarray(rng.standard_normal(shape).astype(np.float32), dtype) for _ in range(4)]


def make_step(arm, length, layers, heads, threshold, block):
  module = encodings.FIRE(num_heads=heads, init_threshold=threshold)
  init = jax.jit(lambda key: module.init(key, 8, method='bias')['params'])
  keys = jax.random.split(jax.random.key(0), layers)
  fire_params = [init(k) for k in keys]
  shared_params = fire_params[:1]

  def loss(q0, k, v, cot, params):
    total = 0.0
    for layer in range(layers):
      q = q0 * (1.0 + 0.1 * layer)  # distinct inputs per layer: XLA must not merge the layers
      if arm == 'no_bias':
        out = attention.naive_attention(q, k, v)
      elif arm == 'blockwise_none':
        out = attention.blockwise_attention(q, k, v, q_block=block, k_block=block)
      elif arm == 'dot_product_attention':
        out = jax.nn.dot_product_attention(q, k, v, is_causal=True,
                                           implementation=fused_implementation())
      elif arm == 'naive_fire':
        _, prepared = module.apply({'params': params[layer]}, length, method='bias')
        out = attention.naive_attention(q, k, v, _fire_naive_bias, prepared)
      else:
        p = params[0] if arm == 'fire_s' else params[layer]
        if arm == 'fire_s' and layer == 0 or arm in ('blockwise_fire', 'fire_mlp'):
          fn, prepared = module.apply({'params': p}, length, method='bias')
          if arm == 'fire_mlp':
            fn = _fire_mlp_pairs_bias
        out = attention.blockwise_attention(q, k, v, fn, prepared, q_block=block, k_block=block)
      total = total + jnp.sum(out * cot, dtype=jnp.float32)
    return total

  grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 4)))
  params = {'fire_s': shared_params, 'dot_product_attention': []}.get(arm, fire_params)
  return grad, params


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--lengths', default='512,2048,8192')
  parser.add_argument('--arms',
                      default='no_bias,naive_fire,blockwise_none,blockwise_fire,fire_s,fire_mlp')
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--heads', type=int, default=8)
  parser.add_argument('--dim', type=int, default=64)
  parser.add_argument('--layers', type=int, default=4)
  parser.add_argument('--block', type=int, default=512)
  parser.add_argument('--threshold', type=float, default=None,
                      help="FIRE's init_L in tokens (overrides --threshold_ratio)")
  parser.add_argument('--threshold_ratio', type=float, default=0.25,
                      help="FIRE's init_L as a fraction of L (the paper's: 512 at 2048)")
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--max_temp_gb', type=float, default=8.0,
                      help='arms needing more scratch memory than this are not run')
  args = parser.parse_args()

  results = {}
  for length in [int(x) for x in args.lengths.split(',')]:
    row = {}
    for arm in args.arms.split(','):
      q, k, v, cot = make_inputs(args.batch, length, args.heads, args.dim, input_dtype(arm))
      threshold = args.threshold or args.threshold_ratio * length
      step, params = make_step(arm, length, args.layers, args.heads, threshold, args.block)
      compiled = step.lower(q, k, v, cot, params).compile()
      analysis = compiled.memory_analysis()
      temp_gb = analysis.temp_size_in_bytes / 2**30
      entry = {'temp_gb': round(temp_gb, 3)}
      if temp_gb <= args.max_temp_gb:
        seconds = timing.cpu_seconds(lambda: compiled(q, k, v, cot, params),
                                     args.repeats if length <= 2048 else 1)
        entry['cpu_s'] = round(seconds, 3)
      else:
        entry['cpu_s'] = None
      row[arm] = entry
      print(length, arm, entry, flush=True)
    # Ratios against naive no-bias attention and the same block-wise kernel without bias.
    for base_arm in ('no_bias', 'blockwise_none'):
      base = row.get(base_arm, {}).get('cpu_s')
      for entry in row.values():
        if base and entry.get('cpu_s'):
          entry[f'vs_{base_arm}'] = round(entry['cpu_s'] / base, 3)
    results[length] = row
  print(json.dumps({'setup': vars(args), 'results': results}, indent=1))


if __name__ == '__main__':
  main()

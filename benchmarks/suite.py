r"""The GPU suite: every hot path at accelerator sizes against its baseline, in one JSON.

    python -m benchmarks.suite [--size=accelerator|tiny] [--out=suite.json] [--only=knn,mrf]

For the day a GPU (or a TPU) is at hand: at `--size=accelerator` (the default) it is meant to run
in <= 8 minutes on one GPU, compilation included; `--size=tiny` runs the same code at toy sizes
(tests/test_benchmarks_suite.py runs it on CPU). The set-ups are the CPU benchmarks' own
(benchmarks/attention.py, knn.py, ensemble.py, mrf.py, decoding.py); every arm runs on the first
device and is timed by `benchmarks.timing` in wall time (compilation excluded: one warm-up call,
then the least of the repeats, each ending in block_until_ready). Sections, each case's baseline
first (sizes: SIZES):

  attention  forward + backward of `layers` causal attention calls (benchmarks/attention.py's
             step) at L = 2,048 and 8,192 (the same tokens per step): blockwise_none (the
             block-wise kernel, common.models.attention, no bias), fire (FIRE's bias per layer,
             fire_pe.encodings.FIRE), fire_s (one FIRE shared by all layers), and
             dot_product_attention (jax.nn.dot_product_attention: cuDNN's fused kernel on a GPU,
             in bfloat16 as it requires; XLA's unfused one elsewhere, in float32)
  knn        exact k-NN at ResMem-LM's shape (Q 16,384, N 2,000,000, D 64, k 32, unit rows):
             jax_plain (one matmul + jax.lax.top_k over whole rows, on the first `plain_q`
             queries: a top-k over 2M columns may be slow on a GPU), kernel (resmem.kernels.knn),
             faiss (faiss-gpu's GpuIndexFlatL2 when installed; faiss-cpu's IndexFlatL2 on a CPU
             backend; else skipped, with the reason); compared per query
  ensemble   one training step of M = 64 and 256 MLPs (benchmarks/ensemble.py's set-up): loop
             (a Python loop of M jitted single-model steps) against ensemble (common.ensemble's
             jitted step of all M models: vmapped on an accelerator, mapped on a CPU)
  mrf        a masked-token backbone call (MaskGIT's 24 x 768 at muse_mrf imagenet256's codebook
             8,192, batch 32) against the MRF layer (muse_mrf.kernels.mean_field, 3 x 3, 5
             iterations) low-rank (r 64) and dense
  decoding   greedy decoding of `new` tokens after `prompt` tokens (fire_pe c4's 12 x 768 shape):
             recompute (the full forward over the buffer at every step) against kv
             (common.models.decoding.generate's KV cache)

Every entry: its time, its FLOPs counted analytically (2 per multiply-add; useful work only, the
same count for every arm of a case, so a slower arm shows a lower rate: attention fwd + bwd = 3 x
the forward's QK^T and PV, causal half; k-NN the distance GEMM 2 Q N D; ensemble 6 x the
forward's multiply-adds per example-model; transformers 2 x the kernels' sizes per token plus
4 d per (query, key) pair per layer; MRF 2 V^2 or 4 V r per position and iteration), the
achieved FLOP/s, the fraction of the device's peak (benchmarks/hardware.py's PEAKS: float32
arms against the TF32 tensor cores on NVIDIA GPUs and bfloat16 on TPUs, where JAX's default
precision runs them; bfloat16 arms against bfloat16; null on an unknown device or a CPU), and
its time relative to the case's baseline (`vs_baseline`). Cross-checks ride along: the k-NN
arms' agreement with jax_plain (on a GPU both round through TF32, so near-ties may differ), and
whether kv decoding gives recompute's tokens. The JSON also names the device (jax's
device_kind) and the machine (CPU model, cores, memory, jax version, XLA_FLAGS) so that numbers
can be compared, and a `summary` of the headline ratios. It is rewritten after every section,
so a run cut short keeps what it measured; an arm that fails is recorded with its error (the
other arms still run) and the exit status is 1.

Not yet run on an accelerator: the 8-minute budget is an estimate (compilation of the attention
arms and the 24-layer backbone dominates). At `--size=tiny` on CPU the numbers are compilation-
and dispatch-bound toys; only the structure is checked. On one CPU core the kernels' ratios are
not an accelerator's either (issue 28: FIRE costs about 1.3x the bias-free kernel there); the
CPU benchmarks' own docstrings give their CPU numbers.
"""

import argparse  # pylint: disable=g-bad-import-order
import json
import sys
import time
import traceback
from types import SimpleNamespace

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# The CPU benchmarks set one-thread XLA flags on import (setdefault: a value given wins); they
# only concern the CPU backend. pylint: disable=g-import-not-at-top
from benchmarks import attention as attention_bench
from benchmarks import decoding as decoding_bench
from benchmarks import ensemble as ensemble_bench
from benchmarks import hardware
from benchmarks import knn as knn_bench
from benchmarks import mrf as mrf_bench
from benchmarks import timing
from common import ensemble_step
from common.models import decoding
from resmem import kernels

SECTIONS = ('attention', 'knn', 'ensemble', 'mrf', 'decoding')

SIZES = {
    'accelerator': {
        'attention': {'lengths': (2048, 8192), 'tokens': 16384, 'heads': 12, 'dim': 64,
                      'layers': 2, 'block': 512, 'threshold_ratio': 0.25, 'repeats': 3},
        'knn': {'q': 16384, 'n': 2_000_000, 'd': 64, 'k': 32, 'plain_q': 2048, 'repeats': 2},
        'ensemble': {'arch': 'mlp256', 'models': (64, 256), 'steps': 10, 'repeats': 3},
        'mrf': {'codebook': 8192, 'grid': 16, 'layers': 24, 'd_model': 768, 'heads': 16,
                'batch': 32, 'iterations': 5, 'rank': 64, 'repeats': 3},
        'decoding': {'layers': 12, 'd_model': 768, 'heads': 12, 'batch': 8, 'prompt': 1024,
                     'new': 64, 'repeats': 2},
    },
    # One case per section (the test's time is mostly compilation); every arm of the
    # accelerator sizes runs.
    'tiny': {
        'attention': {'lengths': (32,), 'tokens': 64, 'heads': 2, 'dim': 8, 'layers': 2,
                      'block': 16, 'threshold_ratio': 0.25, 'repeats': 2},
        'knn': {'q': 48, 'n': 2048, 'd': 8, 'k': 4, 'plain_q': 32, 'repeats': 2},
        'ensemble': {'arch': 'mlp16', 'models': (4,), 'steps': 2, 'repeats': 2},
        'mrf': {'codebook': 32, 'grid': 4, 'layers': 1, 'd_model': 16, 'heads': 2, 'batch': 2,
                'iterations': 2, 'rank': 4, 'repeats': 2},
        'decoding': {'layers': 1, 'd_model': 16, 'heads': 2, 'batch': 2, 'prompt': 8, 'new': 4,
                     'repeats': 2},
    },
}

# ---------------------------------------------------------------------------------------------
# Entries.
# ---------------------------------------------------------------------------------------------
def _timed(fn, repeats: int):
  """(least wall time of `repeats` calls, compilation excluded, the last output): the device's
  time, which the host's CPU time is not."""
  return timing.timed(fn, repeats, clock=time.perf_counter)


def _time(fn, repeats: int) -> float:
  return _timed(fn, repeats)[0]


def _entry(section, case, arm, seconds, flops, dtype='float32', **detail):
  dev = jax.devices()[0]
  peak_flops, source = hardware.peak(dev.device_kind, dtype,
                                     jax.config.jax_default_matmul_precision)
  rate = flops / seconds if seconds > 0 else None
  return {'section': section, 'case': case, 'arm': arm, 'status': 'ok',
          'seconds': seconds, 'flops': float(flops), 'flops_per_s': rate, 'dtype': dtype,
          'peak_flops_per_s': peak_flops, 'peak_source': source,
          'peak_fraction': None if peak_flops is None or rate is None else rate / peak_flops,
          **detail}


def _failed(section, case, arm, error: BaseException):
  return {'section': section, 'case': case, 'arm': arm, 'status': 'error',
          'error': f'{type(error).__name__}: {error}'[:2000],
          'traceback': traceback.format_exc()[-4000:]}


def _skipped(section, case, arm, reason):
  return {'section': section, 'case': case, 'arm': arm, 'status': 'skipped', 'reason': reason}


def _arms(section, case, arms):
  """Runs each (arm, thunk() -> entry) in turn; a failure is recorded and the next arm runs."""
  out = []
  for arm, run in arms:
    started = time.perf_counter()
    try:
      entry = run()
    except Exception as e:  # pylint: disable=broad-except  (recorded, and the exit status says so)
      entry = _failed(section, case, arm, e)
    entry['wall_s_with_setup'] = round(time.perf_counter() - started, 3)
    out.append(entry)
    print(json.dumps({k: v for k, v in entry.items() if k != 'traceback'}), flush=True)
  return _relative(out)


def _relative(entries):
  """vs_baseline: each ok arm's time (per query where given) over the case's first ok arm's."""
  ok = [e for e in entries if e['status'] == 'ok']
  if ok:
    per = lambda e: e['seconds'] / e.get('queries', 1)
    base = ok[0]
    for e in ok:
      e['baseline'] = base['arm']
      e['vs_baseline'] = per(e) / per(base)
  return entries


def transformer_flops(params, layers: int, d_model: int, contexts) -> float:
  """Forward FLOPs of a Transformer at one position per entry of `contexts` (the keys each
  attends to): 2 x the dense kernels' sizes per position, plus QK^T and PV (4 d per key) per
  layer."""
  kernels_size = sum(int(np.prod(x.shape)) for path, x in
                     jax.tree_util.tree_leaves_with_path(nn.meta.unbox(params))
                     if getattr(path[-1], 'key', None) == 'kernel')
  contexts = np.asarray(contexts, np.float64)
  return float(2 * kernels_size * contexts.size + 4 * layers * d_model * contexts.sum())


# ---------------------------------------------------------------------------------------------
# Sections: each returns its entries.
# ---------------------------------------------------------------------------------------------
def attention_section(s):
  entries = []
  arms = (('blockwise_none', 'blockwise_none'), ('fire', 'blockwise_fire'),
          ('fire_s', 'fire_s'), ('dot_product_attention', 'dot_product_attention'))
  for length in s['lengths']:
    batch = max(1, s['tokens'] // length)
    case = f'L={length}'
    # forward QK^T and PV (2 x 2 B H L^2 D, causal half), backward twice that
    flops = 3 * 2 * batch * s['heads'] * length ** 2 * s['dim'] * s['layers']

    def run(arm, bench_arm, length=length, batch=batch, flops=flops, case=case):
      dtype = attention_bench.input_dtype(bench_arm)
      q, k, v, cot = attention_bench.make_inputs(batch, length, s['heads'], s['dim'], dtype)
      step, params = attention_bench.make_step(bench_arm, length, s['layers'], s['heads'],
                                               s['threshold_ratio'] * length, s['block'])
      compiled = step.lower(q, k, v, cot, params).compile()
      seconds = _time(lambda: compiled(q, k, v, cot, params), s['repeats'])
      detail = {'batch': batch, 'length': length, 'heads': s['heads'], 'dim': s['dim'],
                'layers': s['layers'], 'block': s['block']}
      if bench_arm == 'dot_product_attention':
        detail['implementation'] = attention_bench.fused_implementation()
      return _entry('attention', case, arm, seconds, flops, jnp.dtype(dtype).name, **detail)

    entries += _arms('attention', case, [(a, lambda a=a, b=b: run(a, b)) for a, b in arms])
  return entries


def knn_section(s):
  case = f"Q={s['q']} N={s['n']} D={s['d']} k={s['k']}"
  shape = SimpleNamespace(q=s['q'], n=s['n'], d=s['d'])
  queries, database = knn_bench._lm_data(shape)  # pylint: disable=protected-access
  q_dev, db_dev = jnp.asarray(queries), jnp.asarray(database)
  plain_q = min(s['plain_q'], s['q'])
  found = {}
  flops = lambda nq: 2 * nq * s['n'] * s['d']
  jax_plain = knn_bench._jax_plain  # pylint: disable=protected-access

  def plain():
    sub = q_dev[:plain_q]
    seconds, (_, idx) = _timed(lambda: jax_plain(sub, db_dev, k=s['k']), s['repeats'])
    found['jax_plain'] = np.asarray(idx)
    return _entry('knn', case, 'jax_plain', seconds, flops(plain_q), queries=plain_q)

  def kernel():
    seconds, (_, idx) = _timed(lambda: kernels.knn(q_dev, db_dev, s['k'], validate=False),
                               s['repeats'])
    idx = np.asarray(idx)
    agree = (kernels.recall(idx[:plain_q], found['jax_plain']) if 'jax_plain' in found
             else None)
    return _entry('knn', case, 'kernel', seconds, flops(s['q']), queries=s['q'],
                  same_neighbours_as_jax_plain=agree)

  def faiss_arm():
    try:
      import faiss  # pylint: disable=g-import-not-at-top
    except ImportError:
      return _skipped('knn', case, 'faiss', 'faiss is not installed (faiss-gpu for a GPU)')
    gpus = faiss.get_num_gpus() if hasattr(faiss, 'get_num_gpus') else 0
    if gpus:
      resources = faiss.StandardGpuResources()
      index = faiss.GpuIndexFlatL2(resources, s['d'])
      kind = 'faiss-gpu GpuIndexFlatL2'
    elif jax.default_backend() == 'cpu':
      index = faiss.IndexFlatL2(s['d'])
      kind = 'faiss-cpu IndexFlatL2'
    else:
      return _skipped('knn', case, 'faiss', 'faiss is installed without GPU support '
                      '(install faiss-gpu to compare on the GPU)')
    index.add(database)
    seconds, (_, idx) = _timed(lambda: index.search(queries, s['k']), s['repeats'])
    return _entry('knn', case, 'faiss', seconds, flops(s['q']), queries=s['q'], index=kind,
                  same_neighbours_as_jax_plain=kernels.recall(idx[:plain_q],
                                                              found['jax_plain'])
                  if 'jax_plain' in found else None)

  return _arms('knn', case, [('jax_plain', plain), ('kernel', kernel), ('faiss', faiss_arm)])


def ensemble_section(s):
  entries = []
  for num_models in s['models']:
    case = f"{s['arch']} M={num_models}"
    setup, macs = ensemble_bench.make_setup(s['arch'], num_models)
    flops = 6 * macs * num_models * ensemble_bench.BATCH

    def run(arm, setup=setup, flops=flops, case=case, num_models=num_models):
      make = (ensemble_bench.loop_arm(setup) if arm == 'loop'
              else ensemble_bench.chunks_arm(setup, num_models))
      step, counter = make[0], [0]

      def steps():  # s['steps'] ensemble steps; each continues from the last one's state
        out = None
        for _ in range(s['steps']):
          out = step(counter[0])
          counter[0] += 1
        return out

      seconds = _time(steps, s['repeats']) / s['steps']
      return _entry('ensemble', case, arm, seconds, flops, models=num_models,
                    batch_per_model=ensemble_bench.BATCH, forward_macs=macs,
                    models_batched=ensemble_step.models_batched() if arm == 'ensemble'
                    else None, example_models_per_s=num_models * ensemble_bench.BATCH / seconds)

    entries += _arms('ensemble', case, [(a, lambda a=a: run(a)) for a in ('loop', 'ensemble')])
    del setup
  return entries


def mrf_section(s):
  args = SimpleNamespace(**s)
  case = (f"V={s['codebook']} grid={s['grid']}x{s['grid']} batch={s['batch']} "
          f"iterations={s['iterations']}")
  tokens = s['grid'] ** 2 + 1  # the class token and the image's

  def backbone():
    run, params = mrf_bench.backbone_setup(args, batch=s['batch'])
    flops = s['batch'] * transformer_flops(params, s['layers'], s['d_model'],
                                           np.full(tokens, tokens))  # bidirectional
    return _entry('mrf', case, 'backbone', _time(run, s['repeats']), flops,
                  layers=s['layers'], d_model=s['d_model'])

  def layer(rank):
    run, flops = mrf_bench.mrf_setup(args, s['codebook'], rank, batch=s['batch'])
    return _entry('mrf', case, 'lowrank' if rank else 'dense', _time(run, s['repeats']), flops,
                  rank=rank)

  return _arms('mrf', case, [('backbone', backbone), ('lowrank', lambda: layer(s['rank'])),
                             ('dense', lambda: layer(None))])


def decoding_section(s):
  p, new, batch = s['prompt'], s['new'], s['batch']
  case = f"prompt={p} new={new} batch={batch}"
  model = decoding_bench.make_model(SimpleNamespace(**s), p + new)
  params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
  prompts = np.random.default_rng(0).integers(3, decoding_bench.PAUSE_ID, (batch, p)).astype(
      np.int32)
  tokens = {}
  flops = lambda contexts: batch * transformer_flops(params, s['layers'], s['d_model'], contexts)
  # kv: the prefill's P positions, then one position per new token; recompute: the whole buffer
  # (P + new positions, causal) at each of the new steps
  kv_flops = flops(np.concatenate([np.arange(1, p + 1), p + 1 + np.arange(new)]))
  recompute_flops = new * flops(np.arange(1, p + new + 1))

  def recompute():
    fn = decoding_bench.recompute_decoder(model, p, new)
    prompts_dev = jnp.asarray(prompts)
    seconds, out = _timed(lambda: fn(params, prompts_dev), s['repeats'])
    tokens['recompute'] = np.asarray(out)
    return _entry('decoding', case, 'recompute', seconds, recompute_flops,
                  tokens_per_s=batch * new / seconds)

  def kv():
    seconds, out = _timed(
        lambda: decoding.generate(model, params, prompts, max_new_tokens=new).tokens,
        s['repeats'])
    same = (bool(np.array_equal(out, tokens['recompute'])) if 'recompute' in tokens else None)
    return _entry('decoding', case, 'kv', seconds, kv_flops, tokens_per_s=batch * new / seconds,
                  same_tokens_as_recompute=same)

  return _arms('decoding', case, [('recompute', recompute), ('kv', kv)])


RUNNERS = {'attention': attention_section, 'knn': knn_section, 'ensemble': ensemble_section,
           'mrf': mrf_section, 'decoding': decoding_section}


# ---------------------------------------------------------------------------------------------
# The summary and main.
# ---------------------------------------------------------------------------------------------
# (arm, base) pairs whose time ratio the summary shows, per section.
HEADLINES = {'attention': (('fire', 'blockwise_none'), ('fire_s', 'blockwise_none'),
                           ('fire_s', 'fire'), ('blockwise_none', 'dot_product_attention')),
             'knn': (('kernel', 'jax_plain'), ('kernel', 'faiss')),
             'ensemble': (('loop', 'ensemble'),),
             'mrf': (('lowrank', 'backbone'), ('dense', 'backbone')),
             'decoding': (('recompute', 'kv'),)}


def summary(entries) -> dict:
  """The headline ratios (time over the named arm's, same case), how many entries ran, and
  whether FIRE-S cost at most FIRE (within 5%, the timing's noise) at every length."""
  by = {(e['section'], e['case'], e['arm']): e for e in entries if e['status'] == 'ok'}
  cases = sorted({(e['section'], e['case']) for e in entries}, key=lambda c: c[0])

  def ratio(section, case, arm, base):
    a, b = by.get((section, case, arm)), by.get((section, case, base))
    if not a or not b:
      return None
    return (a['seconds'] / a.get('queries', 1)) / (b['seconds'] / b.get('queries', 1))

  headline = {}
  for section, case in cases:
    for arm, base in HEADLINES.get(section, ()):
      value = ratio(section, case, arm, base)
      if value is not None:
        headline[f'{section} {case}: {arm} / {base}'] = round(value, 4)
  fire_s_ok = [headline[k] <= 1.05 for k in headline if k.endswith('fire_s / fire')]
  counts = {status: sum(e['status'] == status for e in entries)
            for status in ('ok', 'skipped', 'error')}
  return {'entries': counts, 'time_ratios': headline,
          'fire_s_not_slower_than_fire': all(fire_s_ok) if fire_s_ok else None}


def table(result) -> str:
  """A markdown table of the entries (for a README), headed by the device and the machine."""
  dev, host = result['device'], result['machine']
  lines = [f"{dev['name']} ({dev['backend']}); host {host['cpu_model']}, {host['cpu_cores']} "
           f"cores; jax {host['jax']}; --size={result['size']}", '',
           '| section | case | arm | ms | TFLOP/s | % of peak | time / baseline |',
           '|---|---|---|---:|---:|---:|---|']
  for e in result['entries']:
    if e['status'] != 'ok':
      lines.append(f"| {e['section']} | {e['case']} | {e['arm']} | {e['status']}: "
                   f"{e.get('reason') or e.get('error')} | | | |")
      continue
    peak = '-' if e['peak_fraction'] is None else f"{100 * e['peak_fraction']:.1f}"
    lines.append(f"| {e['section']} | {e['case']} | {e['arm']} | {1e3 * e['seconds']:.3g} | "
                 f"{e['flops_per_s'] / 1e12:.3g} | {peak} | {e['vs_baseline']:.3g} "
                 f"({e['baseline']}) |")
  return '\n'.join(lines)


def parse(argv):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--size', default='accelerator', choices=tuple(SIZES),
                      help="'accelerator': the sizes above (a GPU); 'tiny': a CPU check")
  parser.add_argument('--only', default=','.join(SECTIONS),
                      help=f'comma-separated sections, of {",".join(SECTIONS)}')
  parser.add_argument('--out', default='suite.json', help='the JSON written')
  parser.add_argument('--repeats', type=int, default=None, help="overrides every section's")
  args = parser.parse_args(argv)
  only = [x for x in args.only.split(',') if x]
  unknown = [x for x in only if x not in SECTIONS]
  if unknown or not only:
    parser.error(f'--only={args.only!r}: unknown section(s) {unknown}; use some of {SECTIONS}.')
  if args.repeats is not None and args.repeats < 1:
    parser.error(f'--repeats={args.repeats}: expected a whole number >= 1.')
  args.only = only
  return args


def run(size: str, only=SECTIONS, out: str | None = None, repeats: int | None = None) -> dict:
  """Runs the sections and returns the suite's JSON object (written to `out` after each)."""
  started = time.perf_counter()
  result = {'suite': 'benchmarks.suite', 'size': size, 'sizes': {}, 'device': hardware.device(),
            'machine': hardware.machine(), 'sections': {}, 'entries': []}
  for name in only:
    sizes = dict(SIZES[size][name], **({'repeats': repeats} if repeats else {}))
    result['sizes'][name] = sizes
    section_start = time.perf_counter()
    try:
      entries = RUNNERS[name](sizes)
    except Exception as e:  # pylint: disable=broad-except  (a set-up shared by the arms failed)
      entries = [_failed(name, 'set-up', 'all', e)]
    result['entries'] += entries
    result['sections'][name] = {'wall_s': round(time.perf_counter() - section_start, 2)}
    result['total_wall_s'] = round(time.perf_counter() - started, 2)
    result['summary'] = summary(result['entries'])
    if out:
      with open(out, 'w', encoding='utf-8') as f:
        json.dump(result, f, indent=1)
  return result


def main(argv=None) -> int:
  args = parse(sys.argv[1:] if argv is None else argv)
  result = run(args.size, args.only, args.out, args.repeats)
  print(json.dumps({'device': result['device']['name'], 'total_wall_s': result['total_wall_s'],
                    **result['summary']}, indent=1))
  print(table(result))
  print(f'Wrote {args.out}.')
  return 1 if result['summary']['entries']['error'] else 0


if __name__ == '__main__':
  sys.exit(main())

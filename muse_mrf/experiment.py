"""The MarkovGen experiment: a class-conditional masked-token model on image tokens, sampled with
T = 8 and T = 4 MaskGIT steps and with T = 4 whose last step is the MRF layer, scored by a
separately trained classifier.

    python -m muse_mrf.main --config=configs/muse_mrf/digits.py:cpu --workdir=/tmp/muse_mrf

Layout under workdir (each a common.train run: re-running resumes): tokenizer/ (the VQ
autoencoder, when config.tokenizer.kind == 'vq'), backbone/ (the masked-token transformer), mrf/
(the MRF layer on the frozen backbone), scorer/ (the digit classifier that scores samples), then
summary.json and figures (sample grids per sampler, quality against backbone calls).
"""

from __future__ import annotations

import os
import time
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from common import app
from common import classifier as classifier_lib
from common import config_lib
from common import report
from common import train as train_lib
from common.data import loader
from common.data import pipeline
from common.models import transformer
from muse_mrf import maskgit
from muse_mrf import mrf as mrf_lib
from muse_mrf import sampler as sampler_lib
from muse_mrf import tokenizers

CLAIM = ('An MRF layer (mean-field inference over the token grid, learned on top of a frozen '
         'masked-token model) can replace the final decoding steps: T = 4 steps whose last is the '
         'MRF are about as good as T = 8 plain MaskGIT steps and clearly better than T = 4 plain '
         'steps, at about half the backbone calls of T = 8.')


# ---------------------------------------------------------------------------------------------
# Config checks (before any compute).
# ---------------------------------------------------------------------------------------------
def check_config(config) -> None:
  tok = config.tokenizer
  if tok.kind not in ('grey', 'kmeans', 'vq'):
    raise config_lib.ConfigError(f"tokenizer.kind={tok.kind!r}: use 'grey', 'kmeans' or 'vq'.")
  if config.mask_schedule not in maskgit.SCHEDULES:
    raise config_lib.ConfigError(f'mask_schedule={config.mask_schedule!r}: use one of '
                                 f'{maskgit.SCHEDULES}.')
  for t in (*config.sampling.plain_steps, *config.sampling.mrf_steps):
    maskgit.check_steps(t)
  for t in config.sampling.mrf_steps:
    maskgit.check_steps(t, t - 1)
  if config.sampling.mrf_fill not in ('sample', 'argmax'):
    raise config_lib.ConfigError(f"sampling.mrf_fill={config.sampling.mrf_fill!r}: use 'sample' "
                                 "or 'argmax'.")
  c = config.claim
  if c.reference_steps not in config.sampling.plain_steps or (
      c.fast_steps not in config.sampling.plain_steps) or (
          c.fast_steps not in config.sampling.mrf_steps):
    raise config_lib.ConfigError(
        f'claim compares plain T = {c.reference_steps}, plain T = {c.fast_steps} and MRF '
        f'T = {c.fast_steps}: sampling.plain_steps {config.sampling.plain_steps} and '
        f'sampling.mrf_steps {config.sampling.mrf_steps} must hold them.')
  lo, hi = config.mrf_r_range
  if not 0.0 <= lo < hi <= 1.0:
    raise config_lib.ConfigError(f'mrf_r_range={config.mrf_r_range}: need 0 <= lo < hi <= 1.')
  for name in ('backbone', 'mrf', 'scorer'):
    config_lib.check_loop(config[name])


# ---------------------------------------------------------------------------------------------
# Data and tokenizer.
# ---------------------------------------------------------------------------------------------
def load_images(config) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
  kwargs = dict(config.get('dataset_kwargs', None) or {})
  train = loader.load(config.dataset, config.train_split, data_dir=config.get('data_dir'), **kwargs)
  test = loader.load(config.dataset, config.test_split, data_dir=config.get('data_dir'), **kwargs)
  return train, test


def make_tokenizer(config, train_images: np.ndarray, workdir: str):
  tok = config.tokenizer
  shape = tuple(train_images.shape[1:])
  if tok.kind == 'grey':
    return tokenizers.GreyLevelTokenizer(levels=tok.levels, image_shape=shape)
  if tok.kind == 'kmeans':
    return tokenizers.KMeansPatchTokenizer(tok.codebook_size, tok.patch, shape).fit(
        train_images, seed=config.seed)
  path = os.path.join(workdir, 'tokenizer', 'vq.msgpack')
  if os.path.exists(path):
    return tokenizers.VQTokenizer.load(path, tok.codebook_size)
  model = tokenizers.VQAutoencoder(codebook_size=tok.codebook_size, embed_dim=tok.embed_dim,
                                   width=tok.width, num_downsamples=tok.num_downsamples,
                                   channels=shape[-1])
  sample = jnp.zeros((1,) + shape, jnp.float32)
  result = train_lib.train(
      config.tokenizer_loop, os.path.join(workdir, 'tokenizer'),
      init_fn=lambda rng: model.init(rng, sample), loss_fn=tokenizers.make_vq_loss_fn(
          model, tok.beta), train_iter=pipeline.BatchIterator(
              {'inputs': train_images}, config.tokenizer_loop.batch_size,
              seed=config.tokenizer_loop.seed), identity={'tokenizer': tok.to_dict()})
  vq = tokenizers.VQTokenizer(model, result.state.params, shape)
  vq.save(path)
  return vq


# ---------------------------------------------------------------------------------------------
# The backbone and the MRF layer.
# ---------------------------------------------------------------------------------------------
def make_backbone(config, tokenizer, num_classes: int) -> transformer.MaskedTokenTransformer:
  m = config.model
  return transformer.MaskedTokenTransformer(
      codebook_size=tokenizer.codebook_size, num_classes=num_classes,
      num_tokens=tokenizer.grid[0] * tokenizer.grid[1], num_layers=m.num_layers,
      d_model=m.d_model, num_heads=m.num_heads, mlp_dim=m.mlp_dim, attention=m.attention)


def train_backbone(config, model, tokens, labels, workdir: str):
  sample_t = jnp.full((1, model.num_tokens), model.mask_id, jnp.int32)
  sample_l = jnp.zeros((1,), jnp.int32) if model.num_classes else None
  return train_lib.train(
      config.backbone, workdir, init_fn=lambda rng: model.init(rng, sample_t, sample_l),
      loss_fn=maskgit.make_loss_fn(model, schedule=config.mask_schedule,
                                   label_smoothing=config.label_smoothing),
      train_iter=pipeline.BatchIterator({'tokens': tokens, 'label': labels},
                                        config.backbone.batch_size, seed=config.backbone.seed),
      identity={'model': config.model.to_dict(), 'schedule': config.mask_schedule,
                'label_smoothing': config.label_smoothing, 'codebook': model.codebook_size})


def make_mrf(config, tokenizer) -> mrf_lib.MRFLayer:
  m = config.mrf_layer
  return mrf_lib.MRFLayer(codebook_size=tokenizer.codebook_size, grid=tuple(tokenizer.grid),
                          window=m.window, iterations=m.iterations, num_kernels=m.num_kernels,
                          rank=m.rank)


def make_mrf_loss_fn(backbone, layer, *, schedule: str, r_range: tuple[float, float],
                     label_smoothing: float = 0.0):
  """Cross-entropy of the MRF's Q against the real tokens at masked positions, masks drawn at
  late-stage rates gamma(r), r ~ U[r_range); the frozen backbone's parameters ride in
  model_state['backbone'] (no gradient, no optimizer state)."""

  def loss_fn(params, model_state, batch, rng):
    tokens = batch['tokens']
    rng_rate, rng_mask = jax.random.split(rng)
    rates = maskgit.mask_rate(rng_rate, tokens.shape[:1], schedule, *r_range)
    masked = maskgit.random_mask(rng_mask, tokens.shape[1], rates)
    inputs = jnp.where(masked, backbone.mask_id, tokens)
    labels = batch['label'] if backbone.num_classes else None
    logits = jax.lax.stop_gradient(
        backbone.apply({'params': model_state['backbone']}, inputs, labels))
    refined = layer.apply({'params': params}, logits, tokens, ~masked)
    loss = mrf_lib.masked_cross_entropy(refined, tokens, masked, label_smoothing)
    base = mrf_lib.masked_cross_entropy(logits, tokens, masked, label_smoothing)
    return loss, ({'backbone_ce': base, 'gain': base - loss}, model_state)

  return loss_fn


def train_mrf(config, backbone, backbone_params, layer, tokens, labels, workdir: str):
  n, v = backbone.num_tokens, backbone.codebook_size
  sample = (jnp.zeros((1, n, v)), jnp.zeros((1, n), jnp.int32), jnp.zeros((1, n), bool))
  init_fn = lambda rng: {**layer.init(rng, *sample), 'backbone': backbone_params}
  return train_lib.train(
      config.mrf, workdir, init_fn=init_fn,
      loss_fn=make_mrf_loss_fn(backbone, layer, schedule=config.mask_schedule,
                               r_range=tuple(config.mrf_r_range)),
      train_iter=pipeline.BatchIterator({'tokens': tokens, 'label': labels},
                                        config.mrf.batch_size, seed=config.mrf.seed),
      identity={'mrf_layer': config.mrf_layer.to_dict(), 'r_range': list(config.mrf_r_range),
                'model': config.model.to_dict()})


# ---------------------------------------------------------------------------------------------
# Scoring: a classifier trained on real (tokenised and decoded) images, and a Frechet distance on
# its penultimate features.
# ---------------------------------------------------------------------------------------------
def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
  """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of two feature sets (N, D)."""
  if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
    raise ValueError(f'Feature sets of shapes {a.shape} and {b.shape}: need (N >= 2, D) each.')
  mu_a, mu_b = a.mean(0), b.mean(0)
  cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  # tr (S_a S_b)^(1/2) = tr (S_a^(1/2) S_b S_a^(1/2))^(1/2): symmetric PSD square roots by
  # eigendecomposition, stable when a feature has no variance (a dead ReLU unit), where
  # scipy.linalg.sqrtm of the product warns of a singular matrix.
  w, v = np.linalg.eigh(cov_a)
  half = (v * np.sqrt(np.clip(w, 0.0, None))[None, :]) @ v.T
  inner = np.linalg.eigvalsh(half @ cov_b @ half)
  trace_root = float(np.sum(np.sqrt(np.clip(inner, 0.0, None))))
  return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_root)


def train_scorer(config, train_images, train_labels, test_images, test_labels, workdir: str,
                 num_classes: int):
  scfg = config.scorer.copy_and_resolve_references()
  with scfg.unlocked():
    scfg.model = ml_collections.ConfigDict(config.scorer_model.to_dict())
  return classifier_lib.train_classifier(
      scfg, workdir, train_arrays={'inputs': train_images, 'label': train_labels},
      eval_arrays={'test': {'inputs': test_images, 'label': test_labels}},
      num_classes=num_classes)


def score(scorer, images: np.ndarray, asked: np.ndarray, reference_features: np.ndarray):
  logits, features = scorer.logits_and_features(images)
  return {'accuracy': float(np.mean(logits.argmax(-1) == asked)),
          'fd': frechet_distance(features, reference_features)}


# ---------------------------------------------------------------------------------------------
# The run.
# ---------------------------------------------------------------------------------------------
def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  check_config(config)
  os.makedirs(workdir, exist_ok=True)
  with app.compilation_cache(os.path.join(workdir, 'jax_cache')):
    return _run(config, workdir)


def _sampler_name(kind: str, steps: int) -> str:
  return f'maskgit_T{steps}' if kind == 'plain' else f'mrf_T{steps}'


def _run(config, workdir: str) -> dict[str, Any]:
  start = time.time()
  train, test = load_images(config)
  num_classes = loader.num_classes(config.dataset, train)
  tokenizer = make_tokenizer(config, train['inputs'], workdir)
  train_tokens, test_tokens = tokenizer.encode(train['inputs']), tokenizer.encode(test['inputs'])
  # The scorer sees what the tokenizer can express: real images through encode/decode.
  real_train = tokenizer.decode(train_tokens)
  real_test = tokenizer.decode(test_tokens)

  backbone = make_backbone(config, tokenizer, num_classes)
  b_result = train_backbone(config, backbone, train_tokens, train['label'],
                            os.path.join(workdir, 'backbone'))
  backbone_params = b_result.state.params
  layer = make_mrf(config, tokenizer)
  m_result = train_mrf(config, backbone, backbone_params, layer, train_tokens, train['label'],
                       os.path.join(workdir, 'mrf'))
  mrf_vars = {'params': m_result.state.params}
  scorer = train_scorer(config, real_train, train['label'], real_test, test['label'],
                        os.path.join(workdir, 'scorer'), num_classes)
  scorer_acc = [r for r in scorer.result.history if 'test/accuracy' in r][-1]['test/accuracy']
  _, ref_features = scorer.logits_and_features(real_test)

  # Samplers: plain MaskGIT at each T, and the MRF sampler (S' = T - 1) at each T.
  s = config.sampling
  asked = np.repeat(np.arange(num_classes), s.per_class).astype(np.int32)
  rows: dict[str, dict[str, Any]] = {}
  images: dict[str, np.ndarray] = {}
  warm = set()
  for kind, steps_list in (('plain', s.plain_steps), ('mrf', s.mrf_steps)):
    for steps in steps_list:
      name = _sampler_name(kind, steps)
      sampler = sampler_lib.Sampler(
          backbone, backbone_params, num_steps=steps, tau=s.tau,
          **({'mrf': layer, 'mrf_params': mrf_vars, 'mrf_fill': s.mrf_fill}
             if kind == 'mrf' else {}))
      if kind not in warm:  # one compiled step per kind serves every T: compile untimed
        sampler.sample(asked, jax.random.key(config.seed + 1000))
        warm.add(kind)
      out = sampler.sample(asked, jax.random.key(config.seed + 1))
      imgs = tokenizer.decode(out.tokens)
      images[name] = imgs
      rows[name] = {'kind': kind, 'T': steps, 'backbone_calls': out.backbone_calls,
                    'seconds': round(out.seconds, 4), 'mrf_step_seconds': round(out.mrf_seconds, 4),
                    **{k: round(v, 4) for k, v in score(scorer, imgs, asked, ref_features).items()}}
      logging.info('%s: %s', name, rows[name])
  # Ablation: the trained layer with its pairwise term zeroed (only the learned unary scale, a
  # temperature on the backbone's logits), at the claim's T: what the pairwise messages add.
  f = config.claim.fast_steps
  unary_only = {'params': {**mrf_vars['params'], **{
      k: jnp.zeros_like(v) for k, v in mrf_vars['params'].items() if k in ('compat', 'compat_b')}}}
  out = sampler_lib.Sampler(backbone, backbone_params, num_steps=f, tau=s.tau, mrf=layer,
                            mrf_params=unary_only, mrf_fill=s.mrf_fill).sample(
                                asked, jax.random.key(config.seed + 1))
  name = f'unary_scale_only_T{f}'
  images[name] = tokenizer.decode(out.tokens)
  rows[name] = {'kind': 'ablation', 'T': f, 'backbone_calls': out.backbone_calls,
                'seconds': round(out.seconds, 4), 'mrf_step_seconds': round(out.mrf_seconds, 4),
                **{k: round(v, 4) for k, v in score(scorer, images[name], asked,
                                                    ref_features).items()}}
  # Real images held out from the scorer's reference: the floor of the Frechet distance.
  n_ref = min(len(real_train), len(asked))
  real_row = score(scorer, real_train[:n_ref], train['label'][:n_ref], ref_features)

  # The MRF layer's cost against one backbone call (the same batch, compiled, timed here).
  cost = layer_cost(backbone, backbone_params, layer, mrf_vars, asked)

  checks = check_claims(config, rows)
  figures = []
  if jax.process_index() == 0:
    figures.append(plot_samples(images, asked, num_classes, os.path.join(workdir, 'samples.png')))
    figures.append(plot_quality(rows, real_row, os.path.join(workdir, 'quality_vs_calls.png')))
  final = lambda h: round([r for r in h if 'loss' in r][-1]['loss'], 4)
  mrf_hist = [r for r in m_result.history if 'loss' in r][-1]
  numbers = {
      'samplers': rows,
      'real_images': {k: round(v, 4) for k, v in real_row.items()},
      'scorer_test_accuracy': round(scorer_acc, 4),
      'backbone_final_loss': final(b_result.history),
      'mrf_final_loss': final(m_result.history),
      'mrf_final_backbone_ce': round(mrf_hist['backbone_ce'], 4),
      'mrf_layer_cost': cost,
      'learned_unary_scale': round(float(m_result.state.params['unary_scale']), 4),
      'checks': checks,
      'seconds': round(time.time() - start, 1),
  }
  m, c = config.model, config.claim
  notes = (f'{config.dataset} tokenised by {config.tokenizer.kind} ({tokenizer.codebook_size} '
           f'codes, {tokenizer.grid[0]} x {tokenizer.grid[1]} grid); a {m.num_layers}-layer '
           f'd {m.d_model} bidirectional masked-token transformer with a class token '
           f'({config.backbone.total_steps} steps of {config.backbone.batch_size}); the MRF '
           f'({config.mrf_layer.window} x {config.mrf_layer.window}, {config.mrf_layer.iterations} '
           f'iterations, rank {config.mrf_layer.rank or "dense"}) trained '
           f'{config.mrf.total_steps} steps on the frozen backbone at r in '
           f'{tuple(config.mrf_r_range)}. {len(asked)} samples per sampler '
           f'({s.per_class} per class), tau = {s.tau}; scored by an MLP trained on the tokenised '
           f'real digits (test accuracy {scorer_acc:.3f}); FD on its penultimate features against '
           f'the {len(real_test)} tokenised test digits.')
  table_rows = [[n, r['T'], r['backbone_calls'], r['accuracy'], r['fd'], r['seconds']]
                for n, r in rows.items()]
  table_rows.append(['real (tokenised train digits)', '-', '-', round(real_row['accuracy'], 4),
                     round(real_row['fd'], 4), '-'])
  tables = [report.table('Samplers', ['sampler', 'T', 'backbone calls', 'class accuracy', 'FD',
                                      'wall s'], table_rows)]
  return report.make_summary(
      name='muse_mrf', title='MarkovGen: an MRF layer that speeds up Muse', claim=CLAIM,
      numbers=numbers, checks=[report.check(x['name'], x['value'], x['threshold'], x['holds'],
                                            informational=x.get('informational', False))
                               for x in checks],
      tables=tables, workdir=workdir, figures=figures, notes=notes, config=config)


def layer_cost(backbone, params, layer, mrf_vars, labels, repeats: int = 5) -> dict[str, float]:
  """Seconds of one backbone call and of the MRF layer alone on the same batch (medians)."""
  tokens = jnp.full((len(labels), backbone.num_tokens), backbone.mask_id, jnp.int32)
  labels = jnp.asarray(labels)
  call = jax.jit(lambda p, t, l: backbone.apply({'params': p}, t, l))
  logits = jax.block_until_ready(call(params, tokens, labels))
  known = jnp.zeros(tokens.shape, bool)
  refine = jax.jit(lambda v, x: layer.apply(v, x, jnp.zeros(tokens.shape, jnp.int32), known))
  jax.block_until_ready(refine(mrf_vars, logits))

  def timed(fn):
    times = []
    for _ in range(repeats):
      t = time.perf_counter()
      jax.block_until_ready(fn())
      times.append(time.perf_counter() - t)
    return float(np.median(times))

  backbone_s = timed(lambda: call(params, tokens, labels))
  mrf_s = timed(lambda: refine(mrf_vars, logits))
  return {'backbone_call_s': round(backbone_s, 5), 'mrf_layer_s': round(mrf_s, 5),
          'ratio': round(mrf_s / backbone_s, 4)}


def check_claims(config, rows) -> list[dict[str, Any]]:
  c = config.claim
  ref, plain, fast = (rows[f'maskgit_T{c.reference_steps}'], rows[f'maskgit_T{c.fast_steps}'],
                      rows[f'mrf_T{c.fast_steps}'])
  r, f = c.reference_steps, c.fast_steps
  checks = []
  d_acc = fast['accuracy'] - ref['accuracy']
  checks.append({'name': f'MRF T={f} class accuracy about T={r} (difference)',
                 'value': round(d_acc, 4), 'threshold': f'>= -{c.acc_margin}',
                 'holds': d_acc >= -c.acc_margin})
  fd_ratio = fast['fd'] / max(ref['fd'], 1e-9)
  checks.append({'name': f'MRF T={f} FD about T={r} (ratio)', 'value': round(fd_ratio, 4),
                 'threshold': f'<= {c.fd_ratio_vs_reference}',
                 'holds': fd_ratio <= c.fd_ratio_vs_reference})
  better = fast['fd'] / max(plain['fd'], 1e-9)
  checks.append({'name': f'MRF T={f} clearly better than plain T={f} (FD ratio)',
                 'value': round(better, 4), 'threshold': f'<= {c.fd_ratio_vs_plain}',
                 'holds': better <= c.fd_ratio_vs_plain})
  gain = fast['accuracy'] - plain['accuracy']
  checks.append({'name': f'MRF T={f} class accuracy minus plain T={f}', 'value': round(gain, 4),
                 'threshold': f'>= {c.acc_gain_vs_plain}', 'holds': gain >= c.acc_gain_vs_plain})
  calls = fast['backbone_calls'] / ref['backbone_calls']
  checks.append({'name': f'backbone calls MRF T={f} / T={r}', 'value': round(calls, 4),
                 'threshold': f'<= {c.calls_ratio}', 'holds': calls <= c.calls_ratio})
  ablation = rows.get(f'unary_scale_only_T{f}')
  if ablation is not None:
    share = ablation['fd'] / max(plain['fd'], 1e-9)
    checks.append({'name': f'pairwise term zeroed (learned temperature only), T={f}: FD ratio to '
                           f'plain T={f}', 'value': round(share, 4),
                   'threshold': 'informational (compare with the MRF\'s ratio)', 'holds': True,
                   'informational': True})
  wall = fast['seconds'] / max(ref['seconds'], 1e-9)
  checks.append({'name': f'wall time MRF T={f} / T={r}', 'value': round(wall, 4),
                 'threshold': 'informational', 'holds': True, 'informational': True})
  return checks


# ---------------------------------------------------------------------------------------------
# Figures.
# ---------------------------------------------------------------------------------------------
def plot_samples(images: dict[str, np.ndarray], asked, num_classes: int, path: str,
                 per_class: int = 8) -> str:
  plt = report.pyplot()
  names = list(images)
  cols = min(len(names), 5)
  rows_ = -(-len(names) // cols)
  fig, axes = plt.subplots(rows_, cols, figsize=(2.6 * cols, 3.4 * rows_), squeeze=False)
  axes = axes.reshape(-1)
  for ax in axes[len(names):]:
    ax.axis('off')
  for ax, name in zip(axes, names):
    imgs = images[name]
    rows = []
    for c in range(num_classes):
      pick = imgs[asked == c][:per_class]
      rows.append(np.concatenate(list(pick[..., 0]) + [np.zeros((imgs.shape[1], 0))], axis=1))
    ax.imshow(np.concatenate(rows, 0), cmap='gray_r', vmin=0, vmax=1)
    ax.set_title(name, fontsize=8)
    ax.axis('off')
  return report.save_figure(fig, path, dpi=110)


def plot_quality(rows, real_row, path: str) -> str:
  plt = report.pyplot()
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
  for kind, style, label in (('plain', 'o-', 'MaskGIT'), ('mrf', 's-', "MaskGIT + MRF last step")):
    pts = sorted((r['backbone_calls'], r['accuracy'], r['fd']) for r in rows.values()
                 if r['kind'] == kind)
    if pts:
      calls, acc, fd = zip(*pts)
      ax1.plot(calls, acc, style, label=label)
      ax2.plot(calls, fd, style, label=label)
  ax1.axhline(real_row['accuracy'], color='gray', ls='--', label='real digits')
  ax2.axhline(real_row['fd'], color='gray', ls='--', label='real digits')
  ax1.set_xlabel('backbone calls per sample')
  ax1.set_ylabel('class accuracy (scorer)')
  ax2.set_xlabel('backbone calls per sample')
  ax2.set_ylabel('Frechet distance (scorer features)')
  ax1.legend(fontsize=7)
  ax2.legend(fontsize=7)
  return report.save_figure(fig, path, dpi=90)

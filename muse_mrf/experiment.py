"""The MarkovGen experiment: a class-conditional masked-token model on image tokens, sampled with
T = 8 and T = 4 MaskGIT steps and with T = 4 whose last step is the MRF layer, scored by a
separately trained classifier.

    python -m muse_mrf.main --config=configs/muse_mrf/digits.py:cpu --workdir=/tmp/muse_mrf

`run` reads as the experiment's phases: the data and tokenizer (prepare_data), the backbone
(fit_backbone), the MRF layer on the frozen backbone (fit_mrf), the sampling grid (draw_samples),
the metrics (measure: the scorer, accuracy and FD per sampler, the real-image floor, the layer's
cost, the checks) and the summary (write_summary). muse_mrf.training trains the models,
muse_mrf.scoring scores samples, muse_mrf.figures draws.

Layout under workdir (each a common.train run: re-running resumes): tokenizer/ (the VQ
autoencoder, when config.tokenizer.kind == 'vq'), backbone/ (the masked-token transformer), mrf/
(the MRF layer on the frozen backbone), scorer/ (the digit classifier that scores samples), then
summary.json and figures (sample grids per sampler, quality against backbone calls).
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from common import config_lib
from common import report
from common import train as train_lib
from common.data import loader
from common.data import pipeline
from common.data import stream
from common.models import transformer
from muse_mrf import config_check
from muse_mrf import figures as figures_lib
from muse_mrf import inputs
from muse_mrf import mrf as mrf_lib
from muse_mrf import sampler as sampler_lib
from muse_mrf import scoring
from muse_mrf import training
# Re-exported: the notebook and the tests reach these through the experiment module.
from muse_mrf.scoring import frechet_distance  # pylint: disable=unused-import
from muse_mrf.inputs import check_labels  # pylint: disable=unused-import
from muse_mrf.scoring import score  # pylint: disable=unused-import
from muse_mrf.training import make_mrf_loss_fn  # pylint: disable=unused-import

CLAIM = ('An MRF layer (mean-field inference over the token grid, learned on top of a frozen '
         'masked-token model) can replace the final decoding steps: T = 4 steps whose last is the '
         'MRF are about as good as T = 8 plain MaskGIT steps and clearly better than T = 4 plain '
         'steps, at about half the backbone calls of T = 8.')


def check_config(config: ml_collections.ConfigDict) -> None:
  """Every field that can be wrong, refused before any compute (muse_mrf.config_check)."""
  config_check.check_config(config)


# ---------------------------------------------------------------------------------------------
# The run: six phases, each a function below.
# ---------------------------------------------------------------------------------------------
def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """The experiment: data and tokenizer, backbone, MRF layer, sampling grid, metrics, summary.
  Each training run resumes from its checkpoint; the config is checked before anything runs."""
  check_config(config)
  os.makedirs(workdir, exist_ok=True)
  start = time.time()
  data = prepare_data(config, workdir)
  backbone, backbone_run = fit_backbone(config, data, os.path.join(workdir, 'backbone'))
  layer, mrf_run = fit_mrf(config, data, backbone, backbone_run.state.params,
                           os.path.join(workdir, 'mrf'))
  trained = Trained(backbone, backbone_run, layer, mrf_run)
  asked = asked_labels(config, data.num_classes)
  draws = draw_samples(config, data, trained, asked)
  metrics = measure(config, data, trained, draws, asked, os.path.join(workdir, 'scorer'))
  return write_summary(config, workdir, data, trained, draws, asked, metrics, start)


# ---------------------------------------------------------------------------------------------
# Phase 1: the data and the tokenizer.
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Data:
  """The images as the models see them: token grids for the backbone and the MRF, tokenised
  (encoded and decoded) images for the scorer, which sees what the tokenizer can express."""
  tokenizer: Any
  num_classes: int
  train_tokens: np.ndarray       # (N, h * w) every training image: the backbone and the MRF
  train_labels: np.ndarray
  scorer_images: np.ndarray      # tokenised training images the scorer trains on: all but the
  scorer_labels: np.ndarray      # last config.scorer_holdout
  floor_images: np.ndarray       # those last ones, which the scorer never sees, scored like
  floor_labels: np.ndarray       # samples: the FD's floor
  test_images: np.ndarray        # tokenised test images: the scorer's test set, the FD reference
  test_labels: np.ndarray

  def token_batches(self, loop) -> pipeline.BatchOrder:
    """Batches {'tokens', 'label'} of every training image, for the backbone and the MRF."""
    return training.token_batches(loop, self.train_tokens, self.train_labels)

  @property
  def num_floor(self) -> int:
    return len(self.floor_images)

  @property
  def num_test(self) -> int:
    return len(self.test_images)

  def score_real(self, config, workdir: str, samples: int) -> 'RealScores':
    """The scorer trained on the tokenised training images (all but the floor's), its test
    accuracy, the test images' features (the FD's reference) and the floor's row: as many
    held-out images as a sampler draws (`samples`), scored like a sampler."""
    scorer = scoring.train_scorer(config, self.scorer_images, self.scorer_labels,
                                  self.test_images, self.test_labels, workdir, self.num_classes)
    accuracy = [r for r in scorer.result.history if 'test/accuracy' in r][-1]['test/accuracy']
    _, reference = scorer.logits_and_features(self.test_images)
    n = min(len(self.floor_images), samples)  # as many as a sampler draws: the same FD bias
    real_row = scoring.score(scorer, self.floor_images[:n], self.floor_labels[:n], reference)
    real_row['images'] = n
    return RealScores(scorer, accuracy, reference, real_row)


@dataclasses.dataclass
class RealScores:
  """What phase 5 reads of the real images: the scorer, its test accuracy, the test images'
  penultimate features (the FD's reference) and the floor's row (held-out real images)."""
  scorer: Any
  accuracy: float
  reference: np.ndarray
  real_row: dict[str, float]


@dataclasses.dataclass
class StreamedData:
  """config.input == 'stream': the splits as sources read batch by batch (muse_mrf.inputs), every
  image resized and cropped to the tokenizer's square; tokens and tokenised images are computed
  per batch, never for the whole split. The training split's last config.scorer_holdout images
  are the floor's, as in memory."""
  tokenizer: Any
  num_classes: int
  train: stream.Source
  test: stream.Source
  transform: stream.ImageTransform
  image_shape: tuple[int, ...]
  holdout: int
  train_split: str
  test_split: str

  def token_batches(self, loop) -> pipeline.BatchOrder:
    return inputs.MappedStream(
        self.train, loop.batch_size, seed=loop.seed, transform=self.transform,
        fn=inputs.TokenBatch(self.tokenizer, self.num_classes, self.train_split))

  @property
  def num_floor(self) -> int:
    return self.holdout

  @property
  def num_test(self) -> int:
    return len(self.test)

  def score_real(self, config, workdir: str, samples: int) -> RealScores:
    """As Data.score_real, reading the splits in batches: the scorer trains on a stream of
    tokenised images; its test accuracy and the reference features come from one pass over the
    tokenised test split, the floor's row from the held-out images."""
    keep = len(self.train) - self.holdout
    round_trip = inputs.RoundTrip(self.tokenizer)
    batches = inputs.MappedStream(inputs.Rows(self.train, 0, keep), config.scorer.batch_size,
                                  seed=config.scorer.seed, transform=self.transform,
                                  fn=round_trip)
    scorer = scoring.train_scorer_streamed(config, batches, self.image_shape, workdir,
                                           self.num_classes)
    read = lambda source: scoring.outputs(scorer, inputs.in_order(
        source, self.transform, config.scorer.batch_size, round_trip))
    logits, reference, labels = read(self.test)
    inputs.check_labels(labels, self.num_classes, self.test_split)
    n = min(self.holdout, samples)
    real_row = scoring.score_outputs(*read(inputs.Rows(self.train, keep, keep + n)), reference)
    real_row['images'] = n
    return RealScores(scorer, float(np.mean(logits.argmax(-1) == labels)), reference, real_row)


AnyData = Data | StreamedData


def upsample_images(images: np.ndarray, factor: int) -> np.ndarray:
  """(N, H, W, C) -> (N, factor H, factor W, C) by bilinear interpolation (pixel centres, edges
  clamped): a finer token grid of the same digits, whose neighbouring tokens are strongly
  dependent (factor 1 returns the images unchanged)."""
  images = np.asarray(images, np.float32)
  if factor == 1:
    return images

  def axis(n):
    pos = np.clip((np.arange(n * factor) + 0.5) / factor - 0.5, 0.0, n - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n - 1)
    return lo, hi, (pos - lo).astype(np.float32)

  lo, hi, w = axis(images.shape[1])
  images = images[:, lo] * (1 - w)[None, :, None, None] + images[:, hi] * w[None, :, None, None]
  lo, hi, w = axis(images.shape[2])
  return images[:, :, lo] * (1 - w)[None, None, :, None] + images[:, :, hi] * w[None, None, :, None]


def load_images(config) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
  """The train and test splits, upsampled by config.upsample (1: as stored)."""
  kwargs = dict(config.get('dataset_kwargs', None) or {})
  train = loader.load(config.dataset, config.train_split, data_dir=config.get('data_dir'), **kwargs)
  test = loader.load(config.dataset, config.test_split, data_dir=config.get('data_dir'), **kwargs)
  for split in (train, test):
    split['inputs'] = upsample_images(split['inputs'], config.upsample)
  return train, test


def _check_holdout(config, num_train: int) -> int:
  keep = num_train - config.scorer_holdout
  if keep < 1:
    raise config_lib.ConfigError(
        f'scorer_holdout={config.scorer_holdout}: the {config.train_split!r} split has '
        f'{num_train} images; hold out fewer so that the scorer has some to train on.')
  return keep


def prepare_data(config, workdir: str) -> Data | StreamedData:
  """Phase 1: load the splits, check their labels, fit (or load) the tokenizer, tokenise, and
  hold the last config.scorer_holdout training images out of the scorer's training: real images
  it has not seen give the Frechet distance's floor (its own training images would give a floor
  lower than any unseen image can reach). config.input == 'stream': prepare_stream."""
  if config.get('input', 'memory') == 'stream':
    return prepare_stream(config, workdir)
  train, test = load_images(config)
  num_classes = loader.num_classes(config.dataset, train)
  check_labels(train['label'], num_classes, config.train_split)
  check_labels(test['label'], num_classes, config.test_split)
  keep = _check_holdout(config, len(train['label']))
  tokenizer = training.make_tokenizer(config, train['inputs'], workdir)
  train_tokens, test_tokens = tokenizer.encode(train['inputs']), tokenizer.encode(test['inputs'])
  real_train, labels = tokenizer.decode(train_tokens), train['label']
  return Data(tokenizer=tokenizer, num_classes=num_classes, train_tokens=train_tokens,
              train_labels=labels, scorer_images=real_train[:keep], scorer_labels=labels[:keep],
              floor_images=real_train[keep:], floor_labels=labels[keep:],
              test_images=tokenizer.decode(test_tokens), test_labels=test['label'])


def prepare_stream(config, workdir: str) -> StreamedData:
  """Phase 1 streamed: the splits as sources (a TFDS dataset must be prepared as array_record:
  else DatasetError with the `tfds build` command, before any compute), every image resized and
  cropped to config.image_size, the VQ tokenizer trained on a stream of them (or loaded). Labels
  are checked per batch as they are read."""
  kwargs = dict(config.get('dataset_kwargs', None) or {})
  data_dir = config.get('data_dir')
  train = stream.classification_source(config.dataset, config.train_split, data_dir=data_dir,
                                       **kwargs)
  test = stream.classification_source(config.dataset, config.test_split, data_dir=data_dir,
                                      **kwargs)
  _check_holdout(config, len(train))
  transform = inputs.image_transform(config)
  shape = tuple(stream.read(train, [0], transform)['inputs'].shape[1:])
  loop = config.tokenizer_loop
  tokenizer = training.make_tokenizer(
      config, None, workdir, image_shape=shape, train_iter=lambda: stream.StreamIterator(
          train, loop.batch_size, seed=loop.seed, transform=transform))
  return StreamedData(tokenizer=tokenizer, num_classes=loader.num_classes(config.dataset),
                      train=train, test=test, transform=transform, image_shape=shape,
                      holdout=config.scorer_holdout, train_split=config.train_split,
                      test_split=config.test_split)


# ---------------------------------------------------------------------------------------------
# Phases 2 and 3: the backbone, then the MRF layer on the frozen backbone.
# ---------------------------------------------------------------------------------------------
def released(result: train_lib.TrainResult, **parts) -> train_lib.TrainResult:
  """The run's result with parts of its final state that no later phase reads set to empty
  values (e.g. the optimizer's moments: twice the backbone's parameters), so their memory (on
  the devices; on the host under fake CPU devices) is freed for the phases that follow."""
  return dataclasses.replace(result, state=result.state.replace(**parts))


def fit_backbone(config, data: AnyData, workdir: str):
  """Phase 2: (the masked-token transformer, its training run; the optimizer state released)."""
  model = training.make_backbone(config, data.tokenizer, data.num_classes)
  run = training.train_backbone(config, model, data.token_batches(config.backbone), workdir)
  return model, released(run, opt_state=None)


def fit_mrf(config, data: AnyData, backbone, backbone_params, workdir: str):
  """Phase 3: (the MRF layer, its training run on the frozen backbone; the run's optimizer state
  and its copy of the backbone's parameters released)."""
  layer = training.make_mrf(config, data.tokenizer)
  run = training.train_mrf(config, backbone, backbone_params, layer,
                           data.token_batches(config.mrf), workdir)
  return layer, released(run, opt_state=None, model_state={})


# ---------------------------------------------------------------------------------------------
# Phase 4: the sampling grid.
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Trained:
  """The trained backbone and MRF layer (phases 2 and 3)."""
  backbone: transformer.MaskedTokenTransformer
  backbone_run: train_lib.TrainResult
  layer: mrf_lib.MRFLayer
  mrf_run: train_lib.TrainResult

  @property
  def backbone_params(self):
    return self.backbone_run.state.params

  @property
  def mrf_vars(self):
    return {'params': self.mrf_run.state.params}


@dataclasses.dataclass
class Draw:
  """What one sampler of the grid drew for the asked labels."""
  kind: str                      # 'plain', 'mrf', or 'ablation' (the MRF, pairwise term zeroed)
  steps: int                     # T
  out: sampler_lib.SampleResult
  images: np.ndarray             # the samples decoded


def unary_only(mrf_vars):
  """The trained layer with its pairwise term zeroed: only the learned unary scale remains (a
  temperature on the backbone's logits)."""
  params = mrf_vars['params']
  return {'params': {**params, **{k: jnp.zeros_like(v) for k, v in params.items()
                                  if k in ('compat', 'compat_b')}}}


def sampler_grid(config, trained: Trained, grid) -> list[tuple[str, str, sampler_lib.Sampler]]:
  """(name, kind, sampler): plain MaskGIT at each T, the MRF sampler (S' = T - 1) at each T, and
  the ablation at the claim's T: the same layer with its pairwise term zeroed, which shows what
  the pairwise messages add."""
  s = config.sampling

  def sampler(steps, mrf_vars=None):
    mrf = {} if mrf_vars is None else {'mrf': trained.layer, 'mrf_params': mrf_vars,
                                        'mrf_fill': s.mrf_fill, 'grid': grid}
    return sampler_lib.Sampler(trained.backbone, trained.backbone_params, num_steps=steps,
                               tau=s.tau, **mrf)

  f = config.checks.fast_steps
  return ([(f'maskgit_T{t}', 'plain', sampler(t)) for t in s.plain_steps] +
          [(f'mrf_T{t}', 'mrf', sampler(t, trained.mrf_vars)) for t in s.mrf_steps] +
          [(f'unary_scale_only_T{f}', 'ablation', sampler(f, unary_only(trained.mrf_vars)))])


def asked_labels(config, num_classes: int) -> np.ndarray:
  """The class each sample is asked for: sampling.per_class of each of the first
  sampling.classes classes (unset: every class), in class order."""
  classes = config.sampling.get('classes')
  classes = num_classes if classes is None else classes
  if classes > num_classes:
    raise config_lib.ConfigError(f'sampling.classes={classes}: {config.dataset} has '
                                 f'{num_classes} classes.')
  return np.repeat(np.arange(classes), config.sampling.per_class).astype(np.int32)


def draw_samples(config, data: AnyData, trained: Trained,
                 asked: np.ndarray) -> dict[str, list[Draw]]:
  """Phase 4: for each of sampling.seeds sampler seeds, every sampler of the grid draws one
  sample per asked label from that seed's key (the samplers of a seed share it: paired).

  One compiled step per program (plain, MRF) serves every T; each program is compiled untimed on
  a throw-away draw before its first timed one.
  """
  draws, warm = {}, set()
  for name, kind, sampler in sampler_grid(config, trained, tuple(data.tokenizer.grid)):
    program = 'plain' if sampler.mrf is None else 'mrf'
    if program not in warm:
      sampler.sample(asked, jax.random.key(config.seed + 1000))
      warm.add(program)
    draws[name] = []
    for seed in range(config.sampling.seeds):
      out = sampler.sample(asked, jax.random.key(config.seed + 1 + seed))
      draws[name].append(Draw(kind=kind, steps=sampler.num_steps, out=out,
                              images=data.tokenizer.decode(out.tokens)))
  return draws


# ---------------------------------------------------------------------------------------------
# Phase 5: the metrics.
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Metrics:
  rows: dict[str, dict[str, Any]]    # per sampler: calls, seconds, class accuracy, FD
  real_row: dict[str, float]         # real images scored as a sampler: the floor
  scorer_accuracy: float
  layer_cost: dict[str, float]
  checks: list[dict[str, Any]]       # report.check rows, decided by intervals over sampler seeds
  diagnosis: dict[str, Any]          # report.table 'Diagnosis: ...'


def sampler_row(draws: list[Draw], scores: list[dict[str, float]]) -> dict[str, Any]:
  """One sampler's row: means over its seeds, and the per-seed values the intervals read."""
  first = draws[0]
  row = {'kind': first.kind, 'T': first.steps, 'backbone_calls': first.out.backbone_calls,
         'seeds': len(draws)}
  per_seed = {'seconds': [d.out.seconds for d in draws],
              'mrf_step_seconds': [d.out.mrf_seconds for d in draws],
              'accuracy': [s['accuracy'] for s in scores], 'fd': [s['fd'] for s in scores]}
  for key, values in per_seed.items():
    row[key] = round(float(np.mean(values)), 4)
    row[f'{key}_per_seed'] = [round(float(v), 5) for v in values]
  return row


def measure(config, data: AnyData, trained: Trained, draws: dict[str, list[Draw]],
            asked: np.ndarray, workdir: str) -> Metrics:
  """Phase 5: train the scorer, score every sampler's draws (per seed) and the real floor images
  against the test images' features, time the MRF layer against one backbone call, decide the
  claim's checks and build the diagnosis table."""
  real = data.score_real(config, workdir, len(asked))
  scorer, reference, real_row = real.scorer, real.reference, real.real_row
  rows = {}
  for name, seeds in draws.items():
    rows[name] = sampler_row(seeds, [scoring.score(scorer, d.images, asked, reference)
                                     for d in seeds])
    logging.info('%s: %s', name, {k: v for k, v in rows[name].items() if 'per_seed' not in k})
  cost = scoring.layer_cost(trained.backbone, trained.backbone_params, trained.layer,
                            trained.mrf_vars, asked)
  floor = real_row['fd']
  return Metrics(rows=rows, real_row=real_row, scorer_accuracy=real.accuracy, layer_cost=cost,
                 checks=scoring.make_checks(config, rows, floor),
                 diagnosis=scoring.diagnosis_table(config, rows, floor, data.tokenizer.grid,
                                                   data.tokenizer.codebook_size))


# ---------------------------------------------------------------------------------------------
# Phase 6: the summary.
# ---------------------------------------------------------------------------------------------
def write_summary(config, workdir: str, data: AnyData, trained: Trained,
                  draws: dict[str, list[Draw]],
                  asked: np.ndarray, metrics: Metrics, start: float) -> dict[str, Any]:
  """Phase 6: figures, numbers, the samplers' table and the checks into summary.json."""
  rows, real_row = metrics.rows, metrics.real_row
  figures = []
  if jax.process_index() == 0:
    figures.append(figures_lib.plot_samples({n: d[0].images for n, d in draws.items()}, asked,
                                            data.num_classes,
                                            os.path.join(workdir, 'samples.png')))
    figures.append(figures_lib.plot_quality(rows, real_row,
                                            os.path.join(workdir, 'quality_vs_calls.png')))
  final = lambda h: round([r for r in h if 'loss' in r][-1]['loss'], 4)
  mrf_last = [r for r in trained.mrf_run.history if 'loss' in r][-1]
  numbers = {
      'samplers': rows,
      'real_images': {k: round(v, 4) for k, v in real_row.items()},  # held out from the scorer
      'scorer_test_accuracy': round(metrics.scorer_accuracy, 4),
      'backbone_final_loss': final(trained.backbone_run.history),
      'mrf_final_loss': final(trained.mrf_run.history),
      'mrf_final_backbone_ce': round(mrf_last['backbone_ce'], 4),
      'mrf_layer_cost': metrics.layer_cost,
      'learned_unary_scale': round(float(trained.mrf_run.state.params['unary_scale']), 4),
      'grid': list(data.tokenizer.grid), 'codebook_size': data.tokenizer.codebook_size,
      'seconds': round(time.time() - start, 1),
  }
  spread = lambda r, k: f"{r[k]} ({min(r[k + '_per_seed']):.3f}-{max(r[k + '_per_seed']):.3f})"
  table_rows = [[n, r['T'], r['backbone_calls'], spread(r, 'accuracy'), spread(r, 'fd'),
                 r['seconds']] for n, r in rows.items()]
  table_rows.append(['real (held-out tokenised train digits, unseen by the scorer)', '-', '-',
                     round(real_row['accuracy'], 4), round(real_row['fd'], 4), '-'])
  tables = [report.table(
      f'Samplers (means over {config.sampling.seeds} sampler seeds, min-max in brackets)',
      ['sampler', 'T', 'backbone calls', 'class accuracy', 'FD', 'wall s'], table_rows),
            metrics.diagnosis]
  return report.make_summary(
      name='muse_mrf', title='MarkovGen: an MRF layer that speeds up Muse', claim=CLAIM,
      numbers=numbers, checks=metrics.checks, tables=tables, workdir=workdir, figures=figures,
      notes=run_notes(config, data, asked, metrics), config=config)


def run_notes(config, data: AnyData, asked: np.ndarray, metrics: Metrics) -> str:
  m, s, layer, tok = config.model, config.sampling, config.mrf_layer, data.tokenizer
  return (f'{config.dataset} tokenised by {config.tokenizer.kind} ({tok.codebook_size} '
          f'codes, {tok.grid[0]} x {tok.grid[1]} grid); a {m.num_layers}-layer '
          f'd {m.d_model} bidirectional masked-token transformer with a class token '
          f'({config.backbone.total_steps} steps of {config.backbone.batch_size}); the MRF '
          f'({layer.window} x {layer.window}, {layer.iterations} '
          f'iterations, rank {layer.rank or "dense"}) trained '
          f'{config.mrf.total_steps} steps on the frozen backbone at r in '
          f'{tuple(config.mrf_r_range)}. {len(asked)} samples per sampler and seed '
          f'({s.per_class} per class, {s.seeds} sampler seeds), tau = {s.tau}; scored by an MLP trained on the tokenised '
          f'real digits (test accuracy {metrics.scorer_accuracy:.3f}), all but the '
          f'{data.num_floor} held out for the floor; FD on its penultimate features '
          f'against the {data.num_test} tokenised test digits; the floor: '
          f'{metrics.real_row["images"]} held-out real digits scored as a sampler.')

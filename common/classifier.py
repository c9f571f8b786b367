"""The platform's reference classifier: data -> model -> the training loop -> metrics -> summary.

Papers that need one trained classifier (ResMem's base models, cascades, abstain, muse_mrf's
scorer) call `train_classifier` with their own config (`study_config` makes one from a study's
template); papers that train many at once use common.ensemble. `run` is the reference experiment
of the main job; `check_config` reads its config only, before anything runs.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from common import config_lib
from common import evaluators as evaluators_lib
from common import mesh as mesh_lib
from common import models
from common import report
from common import train as train_lib
from common.data import loader
from common.data import pipeline
from common.data import stream


@dataclasses.dataclass
class Classifier:
  """A trained classifier: the model, its final state and a jitted predict function."""
  model: nn.Module
  result: train_lib.TrainResult
  num_classes: int

  @property
  def variables(self) -> dict[str, Any]:
    state = self.result.state
    return {'params': state.params, **state.model_state}

  @functools.cached_property
  def _apply(self):
    return jax.jit(lambda v, x: self.model.apply(v, x, train=False))  # compiled once per shape

  @functools.cached_property
  def _apply_features(self):
    return jax.jit(lambda v, x: self.model.apply(v, x, train=False, return_features=True))

  def logits(self, inputs: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    return np.concatenate([np.asarray(self._apply(self.variables, inputs[i:i + batch_size]))
                           for i in range(0, len(inputs), batch_size)])

  def logits_and_features(self, inputs: np.ndarray,
                          batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Logits and the penultimate features (the input of the readout) of every input."""
    outs = [self._apply_features(self.variables, inputs[i:i + batch_size])
            for i in range(0, len(inputs), batch_size)]
    return (np.concatenate([np.asarray(o[0]) for o in outs]),
            np.concatenate([np.asarray(o[1]) for o in outs]))


def load_data(config: ml_collections.ConfigDict):
  """(train arrays, {eval name: arrays}, number of classes) from config.dataset and its splits."""
  kwargs = dict(config.get('dataset_kwargs', {}) or {})
  data_dir = config.get('data_dir')
  train = loader.load(config.dataset, config.train_split, data_dir=data_dir, **kwargs)
  evals = {name: loader.load(config.dataset, split, data_dir=data_dir, **kwargs)
           for name, split in config.eval_splits}
  return train, evals, loader.num_classes(config.dataset, train)


def apply_in_training(model: nn.Module, params, model_state, inputs, rng):
  """(logits, new model state) of a training step: train=True, dropout from `rng`, the mutable
  collections (batch statistics) updated. Every classifier loss here starts with it."""
  mutable = list(model_state.keys())
  out = model.apply({'params': params, **model_state}, inputs, train=True,
                    rngs={'dropout': rng}, mutable=mutable or False)
  logits, new_model_state = out if mutable else (out, model_state)
  return logits, dict(new_model_state)


def make_loss_fn(model: nn.Module, num_classes: int, label_smoothing: float = 0.0):
  """Softmax cross-entropy (optionally label-smoothed) with accuracy as a metric."""

  def loss_fn(params, model_state, batch, rng):
    logits, new_model_state = apply_in_training(model, params, model_state, batch['inputs'], rng)
    targets = optax.smooth_labels(jax.nn.one_hot(batch['label'], num_classes), label_smoothing)
    loss = jnp.mean(optax.softmax_cross_entropy(logits, targets))
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch['label'])
    return loss, ({'accuracy': accuracy}, new_model_state)

  return loss_fn


def make_predict_fn(model: nn.Module):
  return lambda params, model_state, inputs: model.apply({'params': params, **model_state},
                                                         inputs, train=False)


def check_study_model(config: ml_collections.ConfigDict, name: str) -> None:
  """A study's model entry `name` ({model, total_steps, learning_rate[, pool]}): its numbers, its
  model's name and fields, and the loop it trains under (`study_config`: input kind, optimizer
  and sharding names); ConfigError naming the dotted field. Reads only the config."""
  config_lib.whole(config, f'{name}.total_steps', 1)
  config_lib.real(config, f'{name}.learning_rate', 0.0, open_low=True)
  if config_lib.field(config, name).get('pool') is not None:
    config_lib.whole(config, f'{name}.pool', 1)
  try:
    models.build(config_lib.field(config, f'{name}.model'), 1)  # names and fields, no compute
  except config_lib.ConfigError as e:
    raise config_lib.ConfigError(f'{name}.model: {e}') from None
  check_config(study_config(config.classifier, config_lib.field(config, name), 0))


def study_config(base: ml_collections.ConfigDict, model: ml_collections.ConfigDict,
                 seed: int) -> ml_collections.ConfigDict:
  """The loop config for one model of a study that trains many (cascades, ResMem, ...).

  `model` holds `model` (the model config), `total_steps` and `learning_rate`. The copy trains
  silently: no evaluations, four log lines, one checkpoint at the end (a rerun reuses the model).
  """
  config = base.copy_and_resolve_references()
  with config.unlocked():
    config.model = ml_collections.ConfigDict(model.model.to_dict())
    config.total_steps = model.total_steps
    config.optimizer.learning_rate = model.learning_rate
    config.seed = seed
    config.eval_splits = ()
    config.log_every_steps = max(1, model.total_steps // 4)
    config.checkpoint_every_steps = model.total_steps
    config.eval_every_steps = 0
    config.expected_accuracy = None
  return config


def stream_inputs(config: ml_collections.ConfigDict):
  """config.input == 'stream': (train iterator, {eval name: (source, transform)}, classes)."""
  kwargs = dict(config.get('dataset_kwargs', {}) or {})
  data_dir = config.get('data_dir')
  size = config.get('image_size')
  train_transform = (stream.ImageTransform(size, train=True) if size
                     else None if config.dataset in loader.available() else stream.ImageToFloat())
  eval_transform = (stream.ImageTransform(size, train=False) if size else train_transform)
  train_source = stream.classification_source(config.dataset, config.train_split,
                                              data_dir=data_dir, **kwargs)
  train_iter = stream.StreamIterator(train_source, config.batch_size, seed=config.seed,
                                     transform=train_transform)
  evals = {name: (stream.classification_source(config.dataset, split, data_dir=data_dir,
                                               **kwargs), eval_transform)
           for name, split in config.eval_splits}
  return train_iter, evals, loader.num_classes(config.dataset)


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError for a reference-classifier config that cannot run; reads only the config.

  The loop's fields (common.config_lib.check_loop), the input kind, the length, the eval splits,
  the model, optimizer and sharding names: what would otherwise fail after the data is loaded,
  or, for eval_batch_size, only at the first evaluation.
  """
  config_lib.get_or_fail(config, 'dataset')
  config_lib.check_loop(config)
  kind = config.get('input', 'memory')
  if kind not in ('memory', 'stream'):
    raise config_lib.ConfigError(f"config.input={kind!r}: use 'memory' or 'stream'.")
  if config.get('total_steps') is None and config.get('total_epochs') is None:
    raise config_lib.ConfigError('config.total_steps and config.total_epochs are both unset: '
                                 'set one of them.')
  for pair in config.get('eval_splits') or ():
    if (not isinstance(pair, (tuple, list)) or len(pair) != 2
        or not all(isinstance(p, str) and p for p in pair)):
      raise config_lib.ConfigError(f'config.eval_splits entry {pair!r}: expected a (name, split) '
                                   "pair of strings, e.g. ('test', 'test').")
  models.build(config.model, 1)  # a module object only: names and fields checked, no compute
  train_lib.make_optimizer(config.optimizer, 1)
  mesh_lib.rules_from_config(config)


def train_classifier(config: ml_collections.ConfigDict, workdir: str, *,
                     train_arrays: dict[str, np.ndarray] | None = None,
                     eval_arrays: dict[str, dict[str, np.ndarray]] | None = None,
                     num_classes: int | None = None,
                     mesh: jax.sharding.Mesh | None = None) -> Classifier:
  """Trains config.model on config.dataset (or on the arrays given) with the common loop.

  config.input 'memory' loads the splits as arrays; 'stream' reads examples on demand (TFDS
  array_record data larger than a host), decoded and augmented per config.image_size.
  """
  config_lib.check_loop(config)  # before the data is loaded
  kind = config.get('input', 'memory')
  if kind not in ('memory', 'stream'):
    raise config_lib.ConfigError(f"config.input={kind!r}: use 'memory' or 'stream'.")
  if kind == 'stream' and train_arrays is None:
    train_iter, evals, num_classes = stream_inputs(config)
    first = stream.read(train_iter.source, [0], train_iter.transform)
    input_shape = first['inputs'].shape[1:]
  else:
    if train_arrays is None:
      train_arrays, loaded_evals, num_classes = load_data(config)
      eval_arrays = loaded_evals if eval_arrays is None else eval_arrays
    num_classes = num_classes or loader.num_classes(config.get('dataset', ''), train_arrays)
    train_iter = pipeline.BatchIterator(train_arrays, config.batch_size, seed=config.seed)
    evals = {name: (arrays, None) for name, arrays in (eval_arrays or {}).items()}
    input_shape = train_arrays['inputs'].shape[1:]
  model = models.build(config.model, num_classes)
  mesh = mesh or mesh_lib.mesh_from_config(config)
  sample = jnp.zeros((1,) + tuple(input_shape), jnp.float32)
  init_fn = lambda rng: model.init(rng, sample, train=False)
  evaluators = [evaluators_lib.ClassificationEvaluator(
      make_predict_fn(model), data, batch_size=config.get('eval_batch_size', 1024), mesh=mesh,
      prefix=name, transform=transform) for name, (data, transform) in evals.items()]
  result = train_lib.train(
      config, workdir, init_fn=init_fn,
      loss_fn=make_loss_fn(model, num_classes, config.get('label_smoothing', 0.0)),
      train_iter=train_iter, evaluators=evaluators, mesh=mesh)
  return Classifier(model=model, result=result, num_classes=num_classes)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """The reference experiment: trains, evaluates on every eval split, writes summary.json."""
  check_config(config)
  classifier = train_classifier(config, workdir)
  history = classifier.result.history
  final = {k: v for r in history for k, v in r.items() if '/' in k}  # newest eval values
  train_records = [r for r in history if 'loss' in r]
  numbers = {
      'train_loss_first': train_records[0]['loss'] if train_records else None,
      'train_loss_last': train_records[-1]['loss'] if train_records else None,
      **final,
      'steps': classifier.result.total_steps,
      'devices': classifier.result.mesh.size,
  }
  target = config.get('expected_accuracy')
  key = f'{config.eval_splits[0][0]}/accuracy' if config.eval_splits else None
  checks = None
  if target is not None and key in final:
    examples = final[key.replace('/accuracy', '/examples')]
    checks = [report.check(
        key, round(final[key], 4), compare='>=', threshold=target,
        interval=report.proportion_interval(round(final[key] * examples), examples),
        note=f'Wilson 95% interval over the {examples} {key.split("/")[0]} examples')]
  figures = []
  if jax.process_index() == 0:
    figures = [report.plot_training_curves(history, os.path.join(workdir, 'training.png'),
                                           title=f'{config.model.name} on {config.dataset}')]
  summary = report.make_summary(
      name='classifier', title='Reference classifier (common/)',
      claim=(f'The common training loop trains a {config.model.name} on {config.dataset} to at '
             f'least {target} {key}.'),
      numbers=numbers, figures=figures, workdir=workdir, config=config,
      **({'reproduced': None} if checks is None else {'checks': checks}),
      tables=[report.table('Final evaluation', ['quantity', 'value'],
                           [[k, v] for k, v in numbers.items() if v is not None])])
  logging.info('Summary: %s', summary)
  return summary

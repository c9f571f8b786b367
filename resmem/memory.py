"""ResMem: a trained model's predictions plus a k-NN regressor fitted to its training residuals.

    memory = resmem.fit(train_embeddings, train_logits, train_labels, task='classification',
                        k=16, sigma=0.1, temperature=1.0)
    probs = memory.predict(test_embeddings, test_logits)     # softmax(g/T) + sum_i w_i r_i

Classification (C classes): p(x) = softmax(g(x) / T), residuals r_i = onehot(y_i) - p(x_i), keys
phi(x_i) L2-normalised; regression: p(x) = g(x), r_i = y_i - g(x_i). For a query x with neighbours
N_k(x) at Euclidean distances d_i:

    w_i(x) = exp(-d_i / sigma) / sum_{j in N_k(x)} exp(-d_j / sigma)     (sigma=None: w_i = 1/k)
    f(x)   = p(x) + sum_{i in N_k(x)} w_i(x) r_i

`tune` picks k, sigma and T on a validation split from one neighbour search (the largest k), and
`ResMem` wraps a model's embedding and prediction functions so that raw inputs go in.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
from typing import Any, Callable, Sequence

import jax
import numpy as np

from resmem import kernels

TASKS = ('classification', 'regression')


class ResMemError(ValueError):
  """Inputs ResMem cannot use (the message says which and why)."""


def normalize(embeddings: np.ndarray, eps: float = 1e-12) -> np.ndarray:
  x = np.asarray(embeddings, np.float32)
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
  z = np.asarray(logits, np.float64) / temperature
  z = np.exp(z - z.max(axis=-1, keepdims=True))
  return z / z.sum(axis=-1, keepdims=True)


def base_predictions(outputs: np.ndarray, task: str, temperature: float = 1.0) -> np.ndarray:
  """p(x): softmax(g / T) for classification, g itself (as (N, outputs)) for regression."""
  if task == 'classification':
    return softmax(outputs, temperature)
  outputs = np.asarray(outputs, np.float64)
  return outputs[:, None] if outputs.ndim == 1 else outputs


def targets_matrix(targets: np.ndarray, task: str, num_outputs: int) -> np.ndarray:
  """One-hot labels (classification) or the targets as (N, outputs) (regression)."""
  targets = np.asarray(targets)
  if task == 'classification':
    if targets.ndim != 1 or not np.issubdtype(targets.dtype, np.integer):
      raise ResMemError(f'Classification labels must be a 1-D integer array, got {targets.dtype} '
                        f'{targets.shape}.')
    if targets.min() < 0 or targets.max() >= num_outputs:
      raise ResMemError(f'Labels must lie in [0, {num_outputs}); got range '
                        f'[{targets.min()}, {targets.max()}].')
    return np.eye(num_outputs)[targets]
  targets = targets.astype(np.float64)
  return targets[:, None] if targets.ndim == 1 else targets


def neighbour_weights(distances: np.ndarray, sigma: float | None) -> np.ndarray:
  """exp(-d / sigma) normalised over each row's neighbours (uniform when sigma is None)."""
  d = np.asarray(distances, np.float64)
  if sigma is None:
    return np.full_like(d, 1.0 / d.shape[-1])
  if sigma <= 0:
    raise ResMemError(f'sigma must be positive (or None for uniform weights), got {sigma}.')
  logits = -(d - d[..., :1]) / sigma  # shift by the nearest: exp never overflows
  w = np.exp(logits)
  return w / w.sum(axis=-1, keepdims=True)


def _check_task(task: str) -> None:
  if task not in TASKS:
    raise ResMemError(f'Unknown task {task!r}; use one of {TASKS}.')


def search(queries: np.ndarray, keys: np.ndarray, k: int, **knn_kwargs):
  """(Euclidean distances, indices) of each query's k nearest keys, nearest first."""
  sq, idx = kernels.knn(queries, keys, k, **knn_kwargs)
  return np.sqrt(np.asarray(sq, np.float64)), np.asarray(idx)


@dataclasses.dataclass
class Memory:
  """The fitted memory: keys (embeddings of the training set) and their residuals.

  Attributes:
    keys: (N, D) float32 embeddings (L2-normalised when `normalize_keys`).
    residuals: (N, C) float32; targets minus the base model's predictions.
    task: 'classification' or 'regression'.
    k, sigma, temperature: the neighbours, kernel width (None: uniform) and softmax temperature.
    normalize_keys: whether queries are L2-normalised before the search (as the keys were).
  """
  keys: np.ndarray
  residuals: np.ndarray
  task: str
  k: int
  sigma: float | None
  temperature: float = 1.0
  normalize_keys: bool = True
  knn_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    _check_task(self.task)
    if len(self.keys) == 0:
      raise ResMemError('The memory is empty: fit it on at least one training example.')
    if len(self.keys) != len(self.residuals):
      raise ResMemError(f'{len(self.keys)} keys but {len(self.residuals)} residuals.')
    if not 1 <= self.k <= len(self.keys):
      raise ResMemError(f'k={self.k} must be between 1 and the memory size {len(self.keys)}.')

  def correction(self, embeddings: np.ndarray) -> np.ndarray:
    """sum_i w_i(x) r_i for each query embedding: (Q, C)."""
    queries = normalize(embeddings) if self.normalize_keys else np.asarray(embeddings, np.float32)
    dist, idx = search(queries, self.keys, self.k, **self.knn_kwargs)
    w = neighbour_weights(dist, self.sigma)
    return np.einsum('qk,qkc->qc', w, self.residuals[idx].astype(np.float64))

  def predict(self, embeddings: np.ndarray, base_outputs: np.ndarray) -> np.ndarray:
    """f(x) = p(x) + correction: class scores (classification) or values (regression)."""
    base = base_predictions(base_outputs, self.task, self.temperature)
    if len(base) != len(embeddings):
      raise ResMemError(f'{len(embeddings)} embeddings but {len(base)} base outputs.')
    out = base + self.correction(embeddings)
    return out[:, 0] if self.task == 'regression' and np.ndim(base_outputs) == 1 else out

  def save(self, path: str) -> str:
    """One .npz with the arrays and the hyper-parameters; written atomically."""
    meta = {'task': self.task, 'k': self.k, 'sigma': self.sigma, 'temperature': self.temperature,
            'normalize_keys': self.normalize_keys, 'knn_kwargs': self.knn_kwargs}
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    tmp = path + '.tmp.npz'
    np.savez(tmp, keys=self.keys, residuals=self.residuals, meta=json.dumps(meta))
    os.replace(tmp, path)
    return path

  @classmethod
  def load(cls, path: str) -> 'Memory':
    if not os.path.exists(path):
      raise FileNotFoundError(f'No ResMem memory at {path}.')
    with np.load(path) as f:
      meta = json.loads(str(f['meta']))
      return cls(keys=f['keys'], residuals=f['residuals'], **meta)


def fit(embeddings: np.ndarray, outputs: np.ndarray, targets: np.ndarray, *, task: str,
        k: int, sigma: float | None, temperature: float = 1.0, normalize_keys: bool | None = None,
        **knn_kwargs) -> Memory:
  """The memory of a trained model from its training-set embeddings, outputs and targets.

  Args:
    embeddings: (N, D) embeddings phi(x_i) of the training inputs.
    outputs: (N, C) logits (classification) or (N,) / (N, C) predictions (regression).
    targets: (N,) integer labels (classification) or (N,) / (N, C) targets (regression).
    task: 'classification' or 'regression'.
    k, sigma, temperature: see `Memory`.
    normalize_keys: L2-normalise embeddings (default: for classification, as in the paper).
    **knn_kwargs: passed to `kernels.knn` (block sizes, mesh, mode).
  """
  _check_task(task)
  embeddings = np.asarray(embeddings, np.float32)
  if embeddings.ndim != 2 or len(embeddings) == 0:
    raise ResMemError(f'Embeddings must be a non-empty (N, D) array, got shape {embeddings.shape}.')
  if not np.isfinite(embeddings).all():
    rows = np.flatnonzero(~np.isfinite(embeddings).all(axis=1))
    raise ResMemError(f'{len(rows)} training embeddings contain NaN or inf (first rows: '
                      f'{rows[:5].tolist()}); the base model may have diverged.')
  if not len(embeddings) == len(outputs) == len(targets):
    raise ResMemError(f'Lengths differ: {len(embeddings)} embeddings, {len(outputs)} outputs, '
                      f'{len(targets)} targets.')
  normalize_keys = task == 'classification' if normalize_keys is None else normalize_keys
  base = base_predictions(outputs, task, temperature)
  residuals = targets_matrix(targets, task, base.shape[1]) - base
  keys = normalize(embeddings) if normalize_keys else embeddings
  return Memory(keys=keys, residuals=residuals.astype(np.float32), task=task, k=k, sigma=sigma,
                temperature=temperature, normalize_keys=normalize_keys, knn_kwargs=knn_kwargs)


def _score(scores: np.ndarray, targets: np.ndarray, task: str) -> float:
  """Accuracy (classification, higher is better) or minus the mean squared error (regression)."""
  if task == 'classification':
    return float(np.mean(scores.argmax(axis=-1) == targets))
  t = targets_matrix(targets, task, scores.shape[-1])
  return -float(np.mean(np.sum((scores - t) ** 2, axis=-1)))


def tune(train: tuple[np.ndarray, np.ndarray, np.ndarray],
         val: tuple[np.ndarray, np.ndarray, np.ndarray], *, task: str,
         ks: Sequence[int], sigmas: Sequence[float | None], temperatures: Sequence[float] = (1.0,),
         zero_base: bool = False, normalize_keys: bool | None = None, **knn_kwargs):
  """The memory whose (k, sigma, T) scores best on the validation split, and the whole grid.

  Args:
    train, val: (embeddings, base outputs, targets) of the training and validation splits.
    ks, sigmas, temperatures: the grid (k larger than the training set is an error).
    zero_base: use p(x) = 0, so the memory stores the targets themselves: a plain k-NN
      classifier/regressor on the same embedding (the paper's k-NN baseline).

  Returns:
    (Memory fitted on `train` with the best values, list of {k, sigma, temperature, score}).
    The score is validation accuracy (classification) or minus the MSE (regression).
  """
  _check_task(task)
  (emb, out, y), (val_emb, val_out, val_y) = train, val
  ks = sorted(set(int(k) for k in ks))
  if not ks or ks[-1] > len(emb) or ks[0] < 1:
    raise ResMemError(f'ks={ks} must lie in [1, {len(emb)}] (the training-set size).')
  if zero_base:
    temperatures = (1.0,)
  probe = fit(emb, out, y, task=task, k=ks[-1], sigma=None, normalize_keys=normalize_keys,
              **knn_kwargs)
  queries = normalize(val_emb) if probe.normalize_keys else np.asarray(val_emb, np.float32)
  dist, idx = search(queries, probe.keys, ks[-1], **knn_kwargs)  # one search for the whole grid
  grid, best = [], None
  for temperature in temperatures:
    base_train = base_predictions(out, task, temperature)
    values = targets_matrix(y, task, base_train.shape[1])
    if not zero_base:
      values = values - base_train
    base_val = (np.zeros_like(base_predictions(val_out, task, temperature)) if zero_base
                else base_predictions(val_out, task, temperature))
    neighbour_values = values[idx]  # (V, kmax, C)
    for k, sigma in itertools.product(ks, sigmas):
      w = neighbour_weights(dist[:, :k], sigma)
      scores = base_val + np.einsum('qk,qkc->qc', w, neighbour_values[:, :k])
      row = {'k': k, 'sigma': sigma, 'temperature': temperature,
             'score': _score(scores, val_y, task)}
      grid.append(row)
      if best is None or row['score'] > best['score']:
        best = row
  if zero_base:  # the memory holds the targets; predict with Memory.correction
    memory = Memory(keys=probe.keys, residuals=targets_matrix(y, task, values.shape[1]).astype(
        np.float32), task=task, k=best['k'], sigma=best['sigma'],
                    normalize_keys=probe.normalize_keys, knn_kwargs=knn_kwargs)
  else:
    memory = fit(emb, out, y, task=task, k=best['k'], sigma=best['sigma'],
                 temperature=best['temperature'], normalize_keys=normalize_keys, **knn_kwargs)
  return memory, grid


class ResMem:
  """A model plus its memory: raw inputs in, ResMem predictions out.

  Args:
    embed_fn: inputs -> (N, D) embeddings (e.g. penultimate features).
    predict_fn: inputs -> (N, C) logits (classification) or predictions (regression).
    memory: the fitted `Memory`.
    zero_base: the memory alone (plain k-NN): the base predictions are replaced by zeros.
  """

  def __init__(self, embed_fn: Callable[[Any], np.ndarray],
               predict_fn: Callable[[Any], np.ndarray], memory: Memory, zero_base: bool = False):
    self.embed_fn, self.predict_fn, self.memory, self.zero_base = (embed_fn, predict_fn, memory,
                                                                   zero_base)

  def __call__(self, inputs) -> np.ndarray:
    emb = np.asarray(jax.device_get(self.embed_fn(inputs)))
    if self.zero_base:
      return self.memory.correction(emb)
    return self.memory.predict(emb, np.asarray(jax.device_get(self.predict_fn(inputs))))

  @classmethod
  def fit(cls, embed_fn, predict_fn, inputs, targets, *, task: str, k: int,
          sigma: float | None, temperature: float = 1.0, **kwargs) -> 'ResMem':
    """Fits the memory on (inputs, targets) with the model's own embeddings and outputs."""
    memory = fit(np.asarray(embed_fn(inputs)), np.asarray(predict_fn(inputs)), targets,
                 task=task, k=k, sigma=sigma, temperature=temperature, **kwargs)
    return cls(embed_fn, predict_fn, memory)

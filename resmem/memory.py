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

`zero_base=True` (in `fit`, `tune`, and then a field of the `Memory`) is the paper's k-NN baseline:
p(x) = 0 and the memory stores the targets themselves. The mode belongs to the memory, so every
prediction path and a saved file agree on it.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
from typing import Any, Callable, Sequence

import jax
import numpy as np
import scipy.special

from resmem import kernels

TASKS = ('classification', 'regression')


class ResMemError(ValueError):
  """Inputs ResMem cannot use (the message says which and why)."""


def as_float32(embeddings, name: str = 'embeddings') -> np.ndarray:
  """The embeddings as float32, refusing integers float32 cannot hold exactly (|v| > 2^24)."""
  x = np.asarray(embeddings)
  kernels.check_integers(x, name, ResMemError)
  return x.astype(np.float32, copy=False)


def normalize(embeddings: np.ndarray, eps: float = 1e-12) -> np.ndarray:
  x = as_float32(embeddings)
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


def check_temperature(temperature: float) -> None:
  # A negative T would flip the softmax's ranking without any other sign of trouble.
  if not (np.isscalar(temperature) and 0 < temperature < np.inf):
    raise ResMemError(f'The temperature must be a positive number, got {temperature!r}.')


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
  check_temperature(temperature)
  return scipy.special.softmax(np.asarray(logits, np.float64) / temperature, axis=-1)


def _check_finite_outputs(outputs: np.ndarray) -> None:
  # A NaN logit makes its row's prediction NaN, which argmax then reads as class 0.
  bad = ~np.isfinite(outputs).reshape(len(outputs), -1).all(axis=1)
  if bad.any():
    rows = np.flatnonzero(bad)
    raise ResMemError(f'{len(rows)} rows of the base model\'s outputs contain NaN or inf (first '
                      f'rows: {rows[:5].tolist()}): their predictions would be NaN (argmax reads '
                      'such a row as class 0); the base model may have diverged.')


def base_predictions(outputs: np.ndarray, task: str, temperature: float = 1.0) -> np.ndarray:
  """p(x): softmax(g / T) for classification, g itself (as (N, outputs)) for regression.

  Non-finite outputs are refused (ResMemError naming the rows).
  """
  outputs = np.asarray(outputs)
  if task == 'classification':
    # 1-D logits would be softmaxed across the examples: a probability vector, silently wrong.
    if outputs.ndim != 2:
      raise ResMemError(f'Classification logits must be a (N, classes) array, got shape '
                        f'{outputs.shape}.')
    _check_finite_outputs(outputs)
    return softmax(outputs, temperature)
  if outputs.ndim not in (1, 2):
    raise ResMemError(f'Regression outputs must be (N,) or (N, outputs), got shape '
                      f'{outputs.shape}.')
  _check_finite_outputs(outputs)
  outputs = outputs.astype(np.float64)
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
  if not sigma > 0:  # also NaN
    raise ResMemError(f'sigma must be positive (or None for uniform weights), got {sigma}.')
  return scipy.special.softmax(-d / sigma, axis=-1)


def _check_task(task: str) -> None:
  if task not in TASKS:
    raise ResMemError(f'Unknown task {task!r}; use one of {TASKS}.')


def _check_k(k, where: str = 'k') -> int:
  # A float k (2.5) used to be truncated or to fail inside XLA; a bool is an int to Python.
  if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
    raise ResMemError(f'{where} must be a positive integer, got {k!r} ({type(k).__name__}).')
  return int(k)


def _units(task: str) -> str:
  return 'classes' if task == 'classification' else 'outputs'


# kernels.knn's keyword arguments a memory may carry; `mesh` is kept apart (not saved).
KNN_OPTIONS = ('query_block', 'db_block', 'group', 'mode', 'recall_target', 'axis', 'validate')


def search(queries: np.ndarray, keys: np.ndarray, k: int, **knn_kwargs):
  """(Euclidean distances, indices) of each query's k nearest keys, nearest first."""
  sq, idx = kernels.knn(queries, keys, k, **knn_kwargs)
  return np.sqrt(np.asarray(sq, np.float64)), np.asarray(idx)


@dataclasses.dataclass
class Memory:
  """The fitted memory: keys (embeddings of the training set) and their residuals.

  Attributes:
    keys: (N, D) float32 embeddings (L2-normalised when `normalize_keys`).
    residuals: (N, C) float32; targets minus the base model's predictions (the targets themselves
      when `zero_base`).
    task: 'classification' or 'regression'.
    k, sigma, temperature: the neighbours, kernel width (None: uniform) and softmax temperature.
    normalize_keys: whether queries are L2-normalised before the search (as the keys were).
    knn_kwargs: `kernels.knn` options (block sizes, mode, axis); saved with the memory.
    zero_base: p(x) = 0: the memory alone is the predictor (plain k-NN); saved with the memory.
    mesh: shard the key search over this mesh (`kernels.knn`'s `mesh`). A runtime choice, not
      part of the memory: never saved; `load` takes one. A 'mesh' in `knn_kwargs` is moved here.
  """
  keys: np.ndarray
  residuals: np.ndarray
  task: str
  k: int
  sigma: float | None
  temperature: float = 1.0
  normalize_keys: bool = True
  knn_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
  zero_base: bool = False
  mesh: jax.sharding.Mesh | None = dataclasses.field(default=None, compare=False, repr=False)

  def __post_init__(self):
    _check_task(self.task)
    self.keys = as_float32(self.keys, 'keys')
    self.residuals = np.asarray(self.residuals, np.float32)
    if len(self.keys) == 0:
      raise ResMemError('The memory is empty: fit it on at least one training example.')
    if self.keys.ndim != 2 or self.residuals.ndim != 2:
      raise ResMemError(f'Keys must be (N, D) and residuals (N, C); got shapes '
                        f'{self.keys.shape} and {self.residuals.shape}.')
    if len(self.keys) != len(self.residuals):
      raise ResMemError(f'{len(self.keys)} keys but {len(self.residuals)} residuals.')
    self.k = _check_k(self.k)
    if not 1 <= self.k <= len(self.keys):
      raise ResMemError(f'k={self.k} must be between 1 and the memory size {len(self.keys)}.')
    if self.sigma is not None and not self.sigma > 0:
      raise ResMemError(f'sigma must be positive (or None for uniform weights), got {self.sigma}.')
    check_temperature(self.temperature)
    if not isinstance(self.zero_base, (bool, np.bool_)):
      raise ResMemError(f'zero_base must be True or False, got {self.zero_base!r}.')
    self.zero_base = bool(self.zero_base)
    self.knn_kwargs = dict(self.knn_kwargs)  # a copy: the caller's dict is not ours to edit
    if 'mesh' in self.knn_kwargs:
      mesh = self.knn_kwargs.pop('mesh')
      if self.mesh is not None and mesh is not None and mesh is not self.mesh:
        raise ResMemError('Two meshes given: one in knn_kwargs and one as `mesh`.')
      self.mesh = self.mesh if mesh is None else mesh
    unknown = sorted(set(self.knn_kwargs) - set(KNN_OPTIONS))
    if unknown:
      raise ResMemError(f'Unknown k-NN options {unknown}; kernels.knn takes '
                        f'{list(KNN_OPTIONS) + ["mesh"]}.')

  @property
  def num_outputs(self) -> int:
    """C: classes (classification) or output dimensions (regression)."""
    return self.residuals.shape[1]

  def correction(self, embeddings: np.ndarray) -> np.ndarray:
    """sum_i w_i(x) r_i for each query embedding: (Q, C). The whole prediction when zero_base."""
    queries = normalize(embeddings) if self.normalize_keys else as_float32(embeddings, 'queries')
    dist, idx = search(queries, self.keys, self.k, mesh=self.mesh, **self.knn_kwargs)
    w = neighbour_weights(dist, self.sigma)
    return np.einsum('qk,qkc->qc', w, self.residuals[idx].astype(np.float64))

  def base(self, base_outputs: np.ndarray) -> np.ndarray:
    """p(x) as (Q, C): zeros when zero_base; the outputs must have the memory's C either way."""
    base = base_predictions(base_outputs, self.task, self.temperature)
    if base.shape[1] != self.num_outputs:
      unit = _units(self.task)
      raise ResMemError(f'The base outputs have {base.shape[1]} {unit} but the memory was fitted '
                        f'with {self.num_outputs} {unit}.')
    return np.zeros_like(base) if self.zero_base else base

  def predict(self, embeddings: np.ndarray, base_outputs: np.ndarray | None = None) -> np.ndarray:
    """f(x) = p(x) + correction: class scores (classification) or values (regression).

    `base_outputs` may be None only for a zero_base memory (it ignores them; given, they are still
    checked against the memory's number of classes or outputs). Outputs holding NaN or inf are
    refused (ResMemError naming the rows), never returned as a NaN row that argmax would read as
    class 0. (This runs on the host with concrete arrays; it is not traced under jit.)
    """
    if base_outputs is None:
      if not self.zero_base:
        raise ResMemError('predict needs the base model\'s outputs (only a zero_base memory, the '
                          'plain k-NN, predicts from the embeddings alone).')
      return self.correction(embeddings)
    base = self.base(base_outputs)
    if len(base) != len(embeddings):
      raise ResMemError(f'{len(embeddings)} embeddings but {len(base)} base outputs.')
    out = base + self.correction(embeddings)
    return out[:, 0] if self.task == 'regression' and np.ndim(base_outputs) == 1 else out

  def save(self, path: str) -> str:
    """One .npz with the arrays and the hyper-parameters (not the mesh); written atomically."""
    meta = {'task': self.task, 'k': self.k, 'sigma': self.sigma, 'temperature': self.temperature,
            'normalize_keys': self.normalize_keys, 'knn_kwargs': self.knn_kwargs,
            'zero_base': self.zero_base}
    try:
      meta_json = json.dumps(meta)
    except TypeError as e:
      raise ResMemError(f'The memory\'s settings cannot be saved as JSON ({e}): {meta}.') from None
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    tmp = path + '.tmp.npz'
    np.savez(tmp, keys=self.keys, residuals=self.residuals, meta=meta_json)
    os.replace(tmp, path)
    return path

  @classmethod
  def load(cls, path: str, mesh: jax.sharding.Mesh | None = None) -> 'Memory':
    """The memory saved at `path`; `mesh`, if given, shards its searches (it is not saved).

    Files written before `zero_base` was saved load as zero_base=False, which is how they were
    always predicted; a classification file that holds one-hot targets (rows summing to 1, where
    residuals sum to 0) was tuned with zero_base=True and is refused rather than mispredicted.
    """
    if not os.path.exists(path):
      raise FileNotFoundError(f'No ResMem memory at {path}.')
    with np.load(path) as f:
      meta = json.loads(str(f['meta']))
      keys, residuals = f['keys'], f['residuals']
    if 'zero_base' not in meta and meta['task'] == 'classification' and np.allclose(
        residuals.sum(axis=1), 1.0, atol=1e-3):
      raise ResMemError(f'{path} predates the saved zero_base mode and holds targets, not '
                        'residuals (a zero_base memory): refit it (tune or fit with '
                        'zero_base=True) and save it again.')
    return cls(keys=keys, residuals=residuals, mesh=mesh, **meta)


def fit(embeddings: np.ndarray, outputs: np.ndarray, targets: np.ndarray, *, task: str,
        k: int, sigma: float | None, temperature: float = 1.0, normalize_keys: bool | None = None,
        zero_base: bool = False, **knn_kwargs) -> Memory:
  """The memory of a trained model from its training-set embeddings, outputs and targets.

  Args:
    embeddings: (N, D) embeddings phi(x_i) of the training inputs.
    outputs: (N, C) logits (classification) or (N,) / (N, C) predictions (regression).
    targets: (N,) integer labels (classification) or (N,) / (N, C) targets (regression).
    task: 'classification' or 'regression'.
    k, sigma, temperature: see `Memory`.
    normalize_keys: L2-normalise embeddings (default: for classification, as in the paper).
    zero_base: store the targets, not the residuals: the plain k-NN (the outputs then only give
      the number of classes; the temperature is unused).
    **knn_kwargs: passed to `kernels.knn` (block sizes, mesh, mode); the mesh is not saved.
  """
  _check_task(task)
  embeddings = as_float32(embeddings, 'training embeddings')
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
  values = targets_matrix(targets, task, base.shape[1])
  if values.shape != base.shape:  # (N, 1) targets against (N, C) outputs would broadcast
    raise ResMemError(f'Targets have shape {values.shape} but the base outputs {base.shape}.')
  residuals = values if zero_base else values - base
  keys = normalize(embeddings) if normalize_keys else embeddings
  return Memory(keys=keys, residuals=residuals.astype(np.float32), task=task, k=k, sigma=sigma,
                temperature=temperature, normalize_keys=normalize_keys, knn_kwargs=knn_kwargs,
                zero_base=zero_base)


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
      classifier/regressor on the same embedding (the paper's k-NN baseline). The returned memory
      carries the mode: its `predict` gives the scores the grid reports.

  Returns:
    (Memory fitted on `train` with the best values, list of {k, sigma, temperature, score}).
    The score is validation accuracy (classification) or minus the MSE (regression).
  """
  _check_task(task)
  (emb, out, y), (val_emb, val_out, val_y) = train, val
  if not len(val_emb) == len(val_out) == len(val_y):
    raise ResMemError(f'Validation lengths differ: {len(val_emb)} embeddings, {len(val_out)} '
                      f'outputs, {len(val_y)} targets.')
  ks = sorted(set(_check_k(k, 'Every k in ks') for k in ks))
  if not ks or ks[-1] > len(emb) or ks[0] < 1:
    raise ResMemError(f'ks={ks} must lie in [1, {len(emb)}] (the training-set size).')
  if zero_base:
    temperatures = (1.0,)
  probe = fit(emb, out, y, task=task, k=ks[-1], sigma=None, normalize_keys=normalize_keys,
              zero_base=zero_base, **knn_kwargs)
  queries = (normalize(val_emb) if probe.normalize_keys
             else as_float32(val_emb, 'validation embeddings'))
  dist, idx = search(queries, probe.keys, ks[-1], **knn_kwargs)  # one search for the whole grid
  grid, best = [], None
  for temperature in temperatures:
    base_train = base_predictions(out, task, temperature)
    values = targets_matrix(y, task, base_train.shape[1])
    if not zero_base:
      values = values - base_train
    base_val = probe.base(val_out) if zero_base else base_predictions(val_out, task, temperature)
    if base_val.shape[1] != values.shape[1]:
      unit = _units(task)
      raise ResMemError(f'The validation outputs have {base_val.shape[1]} {unit} but the training '
                        f'outputs {values.shape[1]} {unit}.')
    neighbour_values = values[idx]  # (V, kmax, C)
    for k, sigma in itertools.product(ks, sigmas):
      w = neighbour_weights(dist[:, :k], sigma)
      scores = base_val + np.einsum('qk,qkc->qc', w, neighbour_values[:, :k])
      row = {'k': k, 'sigma': sigma, 'temperature': temperature,
             'score': _score(scores, val_y, task)}
      grid.append(row)
      if best is None or row['score'] > best['score']:
        best = row
  memory = fit(emb, out, y, task=task, k=best['k'], sigma=best['sigma'],
               temperature=best['temperature'], normalize_keys=normalize_keys, zero_base=zero_base,
               **knn_kwargs)
  return memory, grid


class ResMem:
  """A model plus its memory: raw inputs in, ResMem predictions out.

  Args:
    embed_fn: inputs -> (N, D) embeddings (e.g. penultimate features).
    predict_fn: inputs -> (N, C) logits (classification) or predictions (regression); not called
      for a zero_base memory (the plain k-NN), whose mode the memory itself carries.
    memory: the fitted `Memory`.
  """

  def __init__(self, embed_fn: Callable[[Any], np.ndarray],
               predict_fn: Callable[[Any], np.ndarray], memory: Memory):
    self.embed_fn, self.predict_fn, self.memory = embed_fn, predict_fn, memory

  def __call__(self, inputs) -> np.ndarray:
    emb = np.asarray(jax.device_get(self.embed_fn(inputs)))
    if self.memory.zero_base:
      return self.memory.predict(emb)
    return self.memory.predict(emb, np.asarray(jax.device_get(self.predict_fn(inputs))))

  @classmethod
  def fit(cls, embed_fn, predict_fn, inputs, targets, *, task: str, k: int,
          sigma: float | None, temperature: float = 1.0, **kwargs) -> 'ResMem':
    """Fits the memory on (inputs, targets) with the model's own embeddings and outputs.

    **kwargs go to `fit` (normalize_keys, zero_base, k-NN options).
    """
    memory = fit(np.asarray(embed_fn(inputs)), np.asarray(predict_fn(inputs)), targets,
                 task=task, k=k, sigma=sigma, temperature=temperature, **kwargs)
    return cls(embed_fn, predict_fn, memory)

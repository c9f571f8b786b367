"""One loader for every dataset: embedded ones by name, and any TFDS dataset a user has prepared.

    arrays = loader.load('digits', 'train[:90%]')   # {'inputs': (N, 8, 8, 1), 'label': (N,)}
    arrays = loader.load('cifar10', 'test', data_dir='~/tensorflow_datasets')

Splits accept TFDS's slicing syntax ('train[:80%]', 'train[100:]'), for embedded datasets too, so a
validation split is carved out the same way everywhere. Text corpora come from `load_text`.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Callable

import numpy as np

from common import config_lib
from common.data import embedded

# ByteVocabulary's layout (as in seqio): 0 pad, 1 eos, 2 unk, then the 256 bytes.
BYTE_OFFSET = 3
BYTE_VOCAB_SIZE = 256 + BYTE_OFFSET

_CLASSIFICATION: dict[str, Callable[..., dict[str, np.ndarray]]] = {
    'digits': lambda split, data_dir=None: embedded.digits(split),
    'mnist1d': embedded.mnist1d,
}
_TEXT: dict[str, Callable[..., np.ndarray]] = {
    'stdlib_text': embedded.stdlib_text,
}
NUM_CLASSES = {'digits': 10, 'mnist1d': 10, 'cifar10': 10, 'cifar100': 100, 'mnist': 10,
               'fashion_mnist': 10, 'imagenet2012': 1000}

# One example's input shape, for building models without the data (shape checks, eval_shape).
INPUT_SHAPES = {'digits': (8, 8, 1), 'mnist1d': (40, 1), 'cifar10': (32, 32, 3),
                'cifar100': (32, 32, 3), 'mnist': (28, 28, 1), 'fashion_mnist': (28, 28, 1),
                'imagenet2012': (224, 224, 3)}


class DatasetError(ValueError):
  """A dataset or split that cannot be loaded; the message says why and what is available."""


_SPLIT_RE = re.compile(r'^(\w+)(?:\[(-?\d*%?):(-?\d*%?)\])?$')


def parse_split(split: str) -> tuple[str, str | None, str | None]:
  match = _SPLIT_RE.match(split.replace(' ', ''))
  if not match:
    raise DatasetError(f'Cannot parse split {split!r}; use e.g. "train", "train[:90%]", '
                       '"train[1000:]".')
  return match.group(1), match.group(2) or None, match.group(3) or None


def _bound(value: str | None, n: int, default: int) -> int:
  if value is None:
    return default
  if value.endswith('%'):
    return int(round(n * float(value[:-1]) / 100))
  return int(value)


def slice_arrays(arrays: dict[str, np.ndarray], start: str | None, stop: str | None):
  n = len(next(iter(arrays.values())))
  sl = slice(_bound(start, n, 0), _bound(stop, n, n))
  return {k: v[sl] for k, v in arrays.items()}


def _import_tfds():
  """Imports TFDS, keeping TensorFlow off the GPUs/TPUs that jax needs."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  for kind in ('GPU', 'TPU'):
    try:
      tf.config.set_visible_devices([], kind)
    except (RuntimeError, ValueError):
      pass  # already initialised, or no such device type
  return tfds


@functools.lru_cache(maxsize=1)
def _tfds_builders() -> tuple[str, ...]:
  return tuple(_import_tfds().list_builders())


def available() -> list[str]:
  return sorted(_CLASSIFICATION) + sorted(_TEXT)


def num_classes(name: str, arrays: dict[str, np.ndarray] | None = None) -> int:
  if name in NUM_CLASSES:
    return NUM_CLASSES[name]
  if arrays is not None:
    return int(arrays['label'].max()) + 1
  raise DatasetError(f'Number of classes of {name!r} unknown.')


def _image_key(features) -> str:
  return 'image' if 'image' in features else next(k for k in features if k not in ('label', 'id'))


def _load_tfds(name: str, split: str, data_dir: str | None) -> dict[str, np.ndarray]:
  tfds = _import_tfds()
  try:
    builder = tfds.builder(name, data_dir=data_dir)
    info_splits = builder.info.splits
    # Batches of 4096 concatenated on the host: `batch_size=-1` crashes TF 2.21 on some inputs.
    dataset = builder.as_dataset(split=split)
    shape = dataset.element_spec[_image_key(dataset.element_spec)].shape
    if not shape.is_fully_defined():
      raise DatasetError(
          f'The images of {name!r} differ in size ({shape}): they cannot be held as one array. '
          "Read them through the streaming path (config.input='stream' with config.image_size, "
          'common.data.stream.ImageTransform), which crops and resizes each one.')
    chunks = list(tfds.as_numpy(dataset.batch(4096)))
  except (tfds.core.registered.DatasetNotFoundError, AssertionError, FileNotFoundError) as e:
    raise DatasetError(
        f'TFDS dataset {name!r} is not prepared under data_dir={data_dir!r} ({e}). Prepare it '
        f'with `tfds build {name} --data_dir=...` on a machine with network, or use an embedded '
        f'dataset: {available()}.') from e
  except DatasetError:
    raise
  except ValueError as e:
    raise DatasetError(f'Split {split!r} of {name!r} is not available; splits: '
                       f'{list(info_splits)}.') from e
  ds = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
  image_key = _image_key(ds)
  inputs = ds[image_key]
  inputs = inputs.astype(np.float32) / 255.0 if inputs.dtype == np.uint8 else inputs
  return {'inputs': inputs, 'label': ds['label'].astype(np.int32)}


def load(name: str, split: str, *, data_dir: str | None = None, **kwargs: Any):
  """Loads a classification dataset as numpy arrays {'inputs', 'label'}."""
  base, start, stop = parse_split(split)
  if name in _CLASSIFICATION:
    if base not in ('train', 'test'):
      raise DatasetError(f'{name!r} has splits "train" and "test", not {base!r}.')
    arrays = _CLASSIFICATION[name](base, data_dir=data_dir, **kwargs)
    return slice_arrays(arrays, start, stop)
  if name in _TEXT:
    raise DatasetError(f'{name!r} is a text corpus: use load_text.')
  if kwargs:
    raise DatasetError(f'Options {sorted(kwargs)} apply only to embedded datasets, not {name!r}.')
  if name not in _tfds_builders():
    raise DatasetError(
        f'Unknown dataset {name!r}{config_lib.closest(name, available())}. Embedded datasets: '
        f'{available()}; any TFDS name (e.g. cifar10, cifar100, imagenet2012) works when '
        'prepared in data_dir.')
  return _load_tfds(name, split, data_dir)


@functools.lru_cache(maxsize=16)
def _load_cached(name: str, split: str, data_dir: str | None, kwargs: tuple) -> dict[str, np.ndarray]:
  arrays = load(name, split, data_dir=data_dir, **dict(kwargs))
  for value in arrays.values():
    value.setflags(write=False)  # shared between callers: a change in place must fail, not leak
  return arrays


def load_splits(spec, names: tuple[str, ...] = ('train', 'val', 'test'), *,
                dataset: str | None = None, data_dir: str | None = None):
  """A paper's splits by config: {name: arrays} for each `name` in `names`.

  `spec` holds `dataset` (unless given), `dataset_kwargs` (embedded datasets' options) and one
  `<name>_split` per name in TFDS's slicing syntax, e.g.

      {'dataset': 'mnist1d', 'dataset_kwargs': {'num_samples': 10_000},
       'train_split': 'train[:90%]', 'val_split': 'train[90%:]', 'test_split': 'test'}

  Loads are cached (the arrays are read-only), so seeds and settings that share a split share
  one copy; `spec.data_dir` (or `data_dir`) is where TFDS datasets and the embedded cache live.
  """
  dataset = dataset or spec.get('dataset')
  if not dataset:
    raise DatasetError('The data config names no dataset (a `dataset` field).')
  missing = [f'{n}_split' for n in names if not spec.get(f'{n}_split')]
  if missing:
    raise DatasetError(f'The data config of {dataset!r} has no {missing}; it has '
                       f'{sorted(k for k in spec.keys() if k.endswith("_split"))}.')
  kwargs = tuple(sorted(dict(spec.get('dataset_kwargs', None) or {}).items()))
  data_dir = spec.get('data_dir', None) or data_dir
  return {n: _load_cached(dataset, spec[f'{n}_split'], data_dir, kwargs) for n in names}


def load_text(name: str, split: str, *, data_dir: str | None = None, max_bytes: int | None = None,
              **kwargs: Any) -> np.ndarray:
  """A text corpus as int32 byte-level token ids (seqio ByteVocabulary layout).

  Embedded corpora (`stdlib_text`) are one byte stream; a TFDS text dataset (e.g. 'c4/en', whose
  examples have a 'text' feature) is its documents' UTF-8 bytes joined by EOS (id 1), read until
  `max_bytes` bytes (None: the whole split).
  """
  base, start, stop = parse_split(split)
  if name in _TEXT:
    data = _TEXT[name](base, data_dir=data_dir, **kwargs)
    data = slice_arrays({'x': data}, start, stop)['x']
    ids = data.astype(np.int32) + BYTE_OFFSET
    return ids if max_bytes is None else ids[:max_bytes]
  if kwargs:
    raise DatasetError(f'Options {sorted(kwargs)} apply only to embedded corpora, not {name!r}.')
  if name.split('/')[0] not in _tfds_builders():
    raise DatasetError(f'Unknown text corpus {name!r}{config_lib.closest(name, _TEXT)}; embedded: '
                       f'{sorted(_TEXT)}; or a prepared TFDS text dataset such as "c4/en".')
  return _load_tfds_text(name, split, data_dir, max_bytes)


def _load_tfds_text(name: str, split: str, data_dir: str | None, max_bytes: int | None):
  tfds = _import_tfds()
  try:
    dataset = tfds.load(name, split=split, data_dir=data_dir, download=False)
  except (tfds.core.registered.DatasetNotFoundError, AssertionError, FileNotFoundError) as e:
    raise DatasetError(f'TFDS text dataset {name!r} is not prepared under data_dir={data_dir!r} '
                       f'({e}); prepare it with `tfds build {name}` first.') from e
  chunks, total = [], 0
  for example in tfds.as_numpy(dataset):
    doc = np.frombuffer(example['text'], np.uint8).astype(np.int32) + BYTE_OFFSET
    chunks.append(np.append(doc, 1))  # EOS between documents
    total += len(doc) + 1
    if max_bytes is not None and total >= max_bytes:
      break
  if not chunks:
    raise DatasetError(f'Split {split!r} of {name!r} is empty.')
  ids = np.concatenate(chunks)
  return ids if max_bytes is None else ids[:max_bytes]


def decode_bytes(ids: np.ndarray) -> str:
  ids = np.asarray(ids)
  ids = ids[ids >= BYTE_OFFSET] - BYTE_OFFSET
  return bytes(ids.astype(np.uint8).tolist()).decode('utf-8', errors='replace')

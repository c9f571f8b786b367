"""Streaming input for data larger than a host: random-access sources read batch by batch.

A source is anything with `len()` and `source[i] -> {feature: value}`: a TFDS data source over
array_record files (`tfds_source`), an in-memory `ArraySource`, or a user's own. `StreamIterator`
reads only this process's rows of each global batch, decodes and augments them in worker
threads a few batches ahead of the step, and stacks them; the loop's Prefetcher puts them on the
devices. Its order is pipeline.BatchOrder's and each example's augmentation draws from
(seed, epoch, index), so batch k is a pure function of (seed, k): the state saved in a checkpoint
is the position, and a resumed run continues mid-epoch exactly as an uninterrupted one.

    source = stream.tfds_source('imagenet2012', 'train', data_dir=...)
    train_iter = stream.StreamIterator(source, 1024, seed=0,
                                       transform=stream.ImageTransform(size=224, train=True))
    train.train(config, workdir, ..., train_iter=train_iter)

Text: `TextRows` turns a source of documents into fixed-length rows (`docs_per_row` documents
packed per row, joined by EOS, cut or padded, with a loss weight per target).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import hashlib
import os
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from common import config_lib
from common.data import loader
from common.data import pipeline

Example = dict[str, Any]
Transform = Callable[[Example, np.random.Generator], Example]


class Source(Protocol):

  def __len__(self) -> int:
    ...

  def __getitem__(self, index: int) -> Example:
    ...


# ---------------------------------------------------------------------------------------------
# Sources.
# ---------------------------------------------------------------------------------------------
class ArraySource:
  """In-memory arrays as a source (small data, and tests of the streaming path)."""

  def __init__(self, arrays: dict[str, np.ndarray]):
    lengths = {k: len(v) for k, v in arrays.items()}
    if not arrays or len(set(lengths.values())) != 1:
      raise ValueError(f'ArraySource needs arrays of one length; got {lengths}.')
    self.arrays = arrays
    self._length = next(iter(lengths.values()))

  def __len__(self) -> int:
    return self._length

  def __getitem__(self, index: int) -> Example:
    return {k: v[index] for k, v in self.arrays.items()}

  def take(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    """Many examples at once, stacked (one gather per array, no per-example work)."""
    return {k: v[indices] for k, v in self.arrays.items()}

  def describe(self) -> str:
    digest = hashlib.blake2b(digest_size=12)
    for key, value in sorted(self.arrays.items()):
      digest.update(key.encode())
      digest.update(np.ascontiguousarray(value).view(np.uint8).reshape(-1))
    return f'arrays[{self._length}]:{digest.hexdigest()}'


class TfdsSource:
  """A prepared TFDS dataset's split (array_record files) with random access; TFDS's slicing
  syntax works (`train[:95%]`)."""

  def __init__(self, name: str, split: str, data_dir: str | None = None):
    tfds = loader._import_tfds()  # pylint: disable=protected-access
    try:
      self._source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except (tfds.core.registered.DatasetNotFoundError, AssertionError, FileNotFoundError,
            NotImplementedError) as e:
      raise loader.DatasetError(
          f'TFDS dataset {name!r} is not prepared under data_dir={data_dir!r} in array_record '
          f'format ({e}). Prepare it with `tfds build {name} --file_format=array_record '
          '--data_dir=...` (random access needs array_record; tfrecord cannot be streamed '
          'by index).') from e
    except ValueError as e:
      raise loader.DatasetError(f'Split {split!r} of {name!r}: {e}') from e
    self.name, self.split = name, split

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> Example:
    return self._source[int(index)]

  def describe(self) -> str:
    return f'tfds:{self.name}:{self.split}:{len(self)}'


def tfds_source(name: str, split: str, data_dir: str | None = None) -> TfdsSource:
  return TfdsSource(name, split, data_dir)


# ---------------------------------------------------------------------------------------------
# Transforms: decoding and augmentation of one example, given its own RNG.
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ImageTransform:
  """Images of any size -> (size, size, C) float32 in [0, 1], and int32 labels.

  train: an Inception-style crop (area fraction in `area_range`, aspect ratio in `ratio_range`,
  ten tries, else the central square) resized to `size`, flipped with probability 1/2. Eval: the
  shorter side resized to size / crop_fraction, then the central size x size crop.
  """
  size: int
  train: bool = True
  area_range: tuple[float, float] = (0.08, 1.0)
  ratio_range: tuple[float, float] = (3 / 4, 4 / 3)
  crop_fraction: float = 0.875
  image_key: str = 'image'

  def __post_init__(self):
    if isinstance(self.size, bool) or int(self.size) < 1:
      raise config_lib.ConfigError(f'ImageTransform size={self.size!r}: expected a whole number >= 1.')
    if not 0 < self.area_range[0] <= self.area_range[1] <= 1:
      raise config_lib.ConfigError(f'area_range={self.area_range}: expected 0 < lo <= hi <= 1.')
    if not 0 < self.crop_fraction <= 1:
      raise config_lib.ConfigError(f'crop_fraction={self.crop_fraction}: expected (0, 1].')

  def _crop_box(self, height: int, width: int, rng: np.random.Generator):
    area = height * width
    for _ in range(10):
      target = area * rng.uniform(*self.area_range)
      ratio = np.exp(rng.uniform(np.log(self.ratio_range[0]), np.log(self.ratio_range[1])))
      w = int(round(np.sqrt(target * ratio)))
      h = int(round(np.sqrt(target / ratio)))
      if 0 < w <= width and 0 < h <= height:
        top = int(rng.integers(0, height - h + 1))
        left = int(rng.integers(0, width - w + 1))
        return top, left, h, w
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side, side

  def __call__(self, example: Example, rng: np.random.Generator) -> Example:
    from PIL import Image  # pylint: disable=g-import-not-at-top
    image = np.asarray(example[self.image_key])
    if image.ndim == 2:
      image = image[:, :, None]
    if image.ndim != 3 or image.dtype != np.uint8:
      raise ValueError(f'ImageTransform expects (H, W, C) uint8 images; got {image.shape} '
                       f'{image.dtype}.')
    height, width, channels = image.shape
    pil = Image.fromarray(image[:, :, 0] if channels == 1 else image)
    if self.train:
      top, left, h, w = self._crop_box(height, width, rng)
      pil = pil.resize((self.size, self.size), Image.BILINEAR,
                       box=(left, top, left + w, top + h))
      out = np.asarray(pil)
      if rng.random() < 0.5:
        out = out[:, ::-1]
    else:
      scale = self.size / self.crop_fraction / min(height, width)
      h, w = max(self.size, round(height * scale)), max(self.size, round(width * scale))
      pil = pil.resize((w, h), Image.BILINEAR)
      top, left = (h - self.size) // 2, (w - self.size) // 2
      out = np.asarray(pil)[top:top + self.size, left:left + self.size]
    out = out.reshape(self.size, self.size, channels).astype(np.float32) / 255.0
    return {'inputs': out, 'label': np.int32(example['label'])}


@dataclasses.dataclass(frozen=True)
class ImageToFloat:
  """TFDS image records as the loop's arrays: uint8 images -> float32 in [0, 1], int32 labels
  (for datasets whose images share one size, e.g. cifar10)."""
  image_key: str = 'image'

  def __call__(self, example: Example, rng: np.random.Generator) -> Example:
    del rng
    image = np.asarray(example[self.image_key])
    image = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image
    return {'inputs': image, 'label': np.int32(example['label'])}


def classification_source(name: str, split: str, *, data_dir: str | None = None,
                          **kwargs) -> Source:
  """An embedded dataset (in memory) or a prepared TFDS one (array_record) as a source."""
  if name in loader.available():
    return ArraySource(loader.load(name, split, data_dir=data_dir, **kwargs))
  if kwargs:
    raise loader.DatasetError(f'Options {sorted(kwargs)} apply only to embedded datasets.')
  return TfdsSource(name, split, data_dir)


class TextRows:
  """A source of documents ({'text': bytes or str}) as a source of fixed-length LM rows.

  Row i packs documents i*m ... i*m + m - 1 (m = docs_per_row) as byte-level ids (seqio
  ByteVocabulary layout), each followed by EOS, cut to length + 1 or padded with 0:
  {'tokens': int32 (length + 1,), 'weights': float32 (length,)}, weight 0 where the target is
  padding. Exact and random access; documents longer than a row are cut, not carried over.
  """

  def __init__(self, documents: Source, length: int, docs_per_row: int = 1,
               text_key: str = 'text'):
    if isinstance(length, bool) or int(length) < 1:
      raise config_lib.ConfigError(f'TextRows length={length!r}: expected a whole number >= 1.')
    if isinstance(docs_per_row, bool) or int(docs_per_row) < 1:
      raise config_lib.ConfigError(f'docs_per_row={docs_per_row!r}: expected a whole number >= 1.')
    self.documents, self.length, self.docs_per_row = documents, int(length), int(docs_per_row)
    self.text_key = text_key
    if len(self) == 0:
      raise loader.DatasetError(f'{len(documents)} documents make no row of {docs_per_row}.')

  def __len__(self) -> int:
    return len(self.documents) // self.docs_per_row

  def __getitem__(self, index: int) -> Example:
    tokens = np.zeros(self.length + 1, np.int32)
    filled = 0
    for d in range(index * self.docs_per_row, (index + 1) * self.docs_per_row):
      text = self.documents[d][self.text_key]
      data = text.encode('utf-8') if isinstance(text, str) else bytes(text)
      ids = np.append(np.frombuffer(data, np.uint8).astype(np.int32) + loader.BYTE_OFFSET, 1)
      take = min(len(ids), self.length + 1 - filled)
      tokens[filled:filled + take] = ids[:take]
      filled += take
      if filled == self.length + 1:
        break
    weights = (np.arange(1, self.length + 1) < filled).astype(np.float32)
    return {'tokens': tokens, 'weights': weights}

  def describe(self) -> str:
    inner = getattr(self.documents, 'describe', lambda: type(self.documents).__name__)()
    return f'text_rows({inner}, length={self.length}, docs_per_row={self.docs_per_row})'


# ---------------------------------------------------------------------------------------------
# The iterator.
# ---------------------------------------------------------------------------------------------
class StreamIterator(pipeline.BatchOrder):
  """Global batches read from a source: this process's rows, transformed in `num_workers` threads,
  `ahead` batches before they are asked for. Same interface (and state) as BatchIterator."""

  def __init__(self, source: Source, global_batch_size: int, *,
               transform: Transform | None = None, num_workers: int | None = None,
               ahead: int = 2, **kwargs):
    super().__init__(len(source), global_batch_size, **kwargs)
    self.source = source
    self.transform = transform
    self.ahead = max(0, int(ahead))
    workers = num_workers or min(32, (os.cpu_count() or 1) * 2)
    self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix='stream')
    self._pending: collections.OrderedDict[int, list] = collections.OrderedDict()
    # Sources that read many examples at once (ArraySource.take) and need no transform are read
    # in the loop's thread; per-example decoding and augmentation go to the workers.
    self._batched = transform is None and hasattr(source, 'take')

  def _example(self, epoch: int, index: int) -> Example:
    example = self.source[int(index)]
    if self.transform is not None:
      example = self.transform(example, np.random.default_rng([self.seed, epoch, int(index)]))
    return example

  def _submit(self, k: int) -> None:
    if k in self._pending:
      return
    if self._batched:  # a gather: cheaper here than a thread hand-off
      return
    epoch = k // self.steps_per_epoch
    self._pending[k] = [self._pool.submit(self._example, epoch, i) for i in self.indices(k)]

  def batch(self, k: int) -> dict[str, np.ndarray]:
    for j in range(k, k + self.ahead + 1):
      self._submit(j)
    for stale in [j for j in self._pending if j < k]:  # a jump (resume): drop what is not needed
      for future in self._pending.pop(stale):
        future.cancel()
    if self._batched:
      return self.source.take(self.indices(k))
    return stack([f.result() for f in self._pending.pop(k)])

  def fingerprint(self) -> dict[str, object]:
    describe = getattr(self.source, 'describe', None)
    return {'source': describe() if describe else f'{type(self.source).__name__}[{len(self)}]',
            'transform': describe_transform(self.transform), 'seed': int(self.seed),
            'shuffle': self.shuffle, 'global_batch_size': self.global_batch_size}

  def __len__(self) -> int:
    return self.num_examples

  def close(self) -> None:
    for futures in self._pending.values():
      for future in futures:
        future.cancel()
    self._pending.clear()
    self._pool.shutdown(wait=False, cancel_futures=True)


def describe_transform(transform) -> str:
  """A transform's description that is the same in every process and run (no addresses): a
  dataclass's repr (its options), else its qualified name."""
  if transform is None or dataclasses.is_dataclass(transform):
    return repr(transform)
  return getattr(transform, '__qualname__', type(transform).__qualname__)


def read(source: Source, indices: Sequence[int], transform: Transform | None = None, *,
         seed: int = 0, pool: concurrent.futures.Executor | None = None) -> dict[str, np.ndarray]:
  """The examples at `indices`, transformed (RNG from (seed, 0, index)) and stacked: for
  evaluation, which reads a split in order."""

  def one(i):
    example = source[int(i)]
    return example if transform is None else transform(
        example, np.random.default_rng([seed, 0, int(i)]))

  examples = list(pool.map(one, indices)) if pool else [one(i) for i in indices]
  return stack(examples)


def stack(examples: Sequence[Example]) -> dict[str, np.ndarray]:
  """One array per feature; examples whose shapes differ get an error that says what to do."""
  out = {}
  for key in examples[0]:
    values = [np.asarray(e[key]) for e in examples]
    shapes = {v.shape for v in values}
    if len(shapes) > 1:
      raise ValueError(
          f'Examples of one batch differ in the shape of {key!r}: {sorted(shapes)[:4]}. Give the '
          'stream a transform that makes them equal (stream.ImageTransform resizes and crops '
          'images; TextRows cuts and pads text).')
    out[key] = np.stack(values)
  return out

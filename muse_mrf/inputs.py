"""The experiment's images streamed (config.input == 'stream'): ImageNet and other datasets whose
images differ in size or do not fit a host, read through common.data.stream batch by batch.

    train = stream.tfds_source('imagenet2012', 'train', data_dir=...)
    images = stream.StreamIterator(train, 256, seed=0, transform=inputs.image_transform(config))
    tokens = inputs.MappedStream(train, 256, seed=0, transform=inputs.image_transform(config),
                                 fn=inputs.TokenBatch(tokenizer, num_classes, 'train'))

Every image is resized and cropped to the square the tokenizer expects (`image_transform`: the
shorter side to config.image_size, the central square; ADM's and MaskGIT's class-conditional
ImageNet preprocessing), so an image's tokens are a function of the image.

What cannot stream: the backbone and the MRF train on token grids, and the in-memory path
tokenises every training image once, up front (a host array of the split: 1.28M x 256 int32 at
ImageNet 256, and the images behind it do not fit). Streamed, the tokens are computed per batch
(`TokenBatch`: the VQ encoder on this process's rows of each global batch, on its first local
device, as the batch is read), so each epoch encodes the split again (one encoder forward per
image, small next to the backbone's step) and nothing of the whole split is held. The scorer
trains on tokenised images (encoded and decoded) the same way (`RoundTrip`). k-means and grey-level
tokenizers fit on (or assume) every image at once and one image size: streaming takes the VQ
tokenizer only (muse_mrf.config_check).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
from typing import Any, Callable

import numpy as np

from common.data import loader
from common.data import pipeline
from common.data import stream


def image_transform(config) -> stream.ImageTransform:
  """Any image -> (image_size, image_size, C) float32 in [0, 1]: the shorter side resized to
  config.image_size (bilinear), then the central square (crop_fraction 1: the whole short side)."""
  return stream.ImageTransform(int(config.image_size), train=False, crop_fraction=1.0)


class Rows:
  """Rows [start, stop) of a source, as a source (the scorer's images and the floor's)."""

  def __init__(self, source: stream.Source, start: int, stop: int):
    if not 0 <= start < stop <= len(source):
      raise ValueError(f'Rows [{start}, {stop}) of a source of {len(source)} examples.')
    self.source, self.start, self.stop = source, int(start), int(stop)

  def __len__(self) -> int:
    return self.stop - self.start

  def __getitem__(self, index: int) -> dict[str, Any]:
    if not 0 <= index < len(self):
      raise IndexError(f'Row {index} of {len(self)}.')
    return self.source[self.start + int(index)]

  def describe(self) -> str:
    inner = getattr(self.source, 'describe', lambda: type(self.source).__name__)()
    return f'{inner}[{self.start}:{self.stop}]'


def check_labels(labels: np.ndarray, num_classes: int, split: str) -> None:
  """DatasetError unless every label of `split` is a class id in [0, num_classes): the backbone's
  embedding lookup under jit would clip another onto the mask token's embedding."""
  labels = np.asarray(labels)
  if not np.issubdtype(labels.dtype, np.integer):
    raise loader.DatasetError(f'{split} labels of dtype {labels.dtype}: expected integer class '
                              'ids.')
  bad = (labels < 0) | (labels >= num_classes)
  if bad.any():
    i = int(np.argmax(bad))
    raise loader.DatasetError(f'{split} label {int(labels[i])} at index {i} is outside the '
                              f'{num_classes} classes [0, {num_classes}).')


def tokenizer_id(tokenizer) -> str:
  """The tokenizer's identity for a run's data fingerprint: its kind and a digest of its
  codebook (a retrained tokenizer gives other tokens, so a resume over it is refused)."""
  params = getattr(tokenizer, 'params', None)
  if params is not None:
    return f'{type(tokenizer).__name__}:{pipeline.digest(np.asarray(params["codebook"]))}'
  centers = getattr(tokenizer, 'centers', None)
  if centers is not None:
    return f'{type(tokenizer).__name__}:{pipeline.digest(np.asarray(centers))}'
  return repr(tokenizer)


@dataclasses.dataclass(frozen=True)
class TokenBatch:
  """A batch of images {'inputs', 'label'} -> {'tokens': (B, h * w) int32, 'label'}: the labels
  checked, the images encoded. `describe()` is the same in every process and run."""
  tokenizer: Any
  num_classes: int
  split: str

  def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    check_labels(batch['label'], self.num_classes, self.split)
    return {'tokens': self.tokenizer.encode(batch['inputs']),
            'label': np.asarray(batch['label'], np.int32)}

  def describe(self) -> str:
    return f'tokens({tokenizer_id(self.tokenizer)})'


@dataclasses.dataclass(frozen=True)
class RoundTrip:
  """A batch of images -> the same images encoded and decoded: what the tokenizer can express
  (the scorer trains and is read on these)."""
  tokenizer: Any

  def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    images = self.tokenizer.decode(self.tokenizer.encode(batch['inputs']))
    return {'inputs': images, 'label': np.asarray(batch['label'], np.int32)}

  def describe(self) -> str:
    return f'round_trip({tokenizer_id(self.tokenizer)})'


class MappedStream(stream.StreamIterator):
  """common.data.stream's StreamIterator whose every stacked batch passes through `fn` (a batch
  -> batch function with `describe()`): same order, state and resume as the stream it wraps."""

  def __init__(self, source: stream.Source, global_batch_size: int, *,
               fn: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]], **kwargs):
    super().__init__(source, global_batch_size, **kwargs)
    self.fn = fn

  def batch(self, k: int) -> dict[str, np.ndarray]:
    return self.fn(super().batch(k))

  def fingerprint(self) -> dict[str, object]:
    return {**super().fingerprint(), 'map': self.fn.describe()}


def in_order(source: stream.Source, transform, batch_size: int, fn=None):
  """Yields the batches of a whole source read in order (the last one short), each through `fn`
  (stream.read, decoding in worker threads). Every process reads every row, so the features of
  a split (the FD's reference, the floor) are the same in all of them, as in memory."""
  pool = concurrent.futures.ThreadPoolExecutor(8, thread_name_prefix='in_order')
  try:
    for start in range(0, len(source), batch_size):
      rows = stream.read(source, range(start, min(len(source), start + batch_size)), transform,
                         pool=pool)
      yield fn(rows) if fn is not None else rows
  finally:
    pool.shutdown(wait=False, cancel_futures=True)

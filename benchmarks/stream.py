r"""Throughput of the streaming input path (common.data.stream) on CPU: examples per second into
the loop, and CPU-seconds per example.

    python -m benchmarks.stream [--workers=N] [--batches=20]

Arms:
  imagenet_train   synthetic ImageNet-sized uint8 images (random sizes 300-500 x 300-500 x 3)
                   through ImageTransform(224, train=True): Inception crop, bilinear resize, flip
  imagenet_eval    the same through ImageTransform(224, train=False): resize, central crop
  c4_rows          c4-like documents (lognormal lengths, median ~1,500 bytes) packed two to a row
                   of 2,049 byte-level tokens (TextRows)
  arrays           in-memory arrays (ArraySource, batched reads): the path's fixed cost
The sources are in memory so that only decoding, augmentation and batching are timed, not a disk.
"""

import argparse
import json
import time

import numpy as np

from common.data import stream


class _Images:
  """ImageNet-like records of random sizes, made on first access and kept."""

  def __init__(self, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    self.shapes = rng.integers(300, 501, size=(n, 2))
    self.labels = rng.integers(0, 1000, size=n)
    self._cache = {}

  def __len__(self):
    return len(self.labels)

  def __getitem__(self, i):
    if i not in self._cache:
      h, w = self.shapes[i]
      self._cache[i] = np.random.default_rng(int(i)).integers(0, 256, (h, w, 3), np.uint8)
    return {'image': self._cache[i], 'label': self.labels[i]}


def _documents(n: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  lengths = np.clip(rng.lognormal(np.log(1500), 0.8, n).astype(int), 20, 50_000)
  return [{'text': rng.integers(32, 127, size=l, dtype=np.uint8).tobytes()} for l in lengths]


def measure(iterator: stream.StreamIterator, batches: int) -> dict[str, float]:
  iterator.batch(0)  # warm: threads started, caches filled for the first batches
  wall, cpu = time.perf_counter(), time.process_time()
  for k in range(1, batches + 1):
    iterator.batch(k)
  wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
  examples = batches * iterator.global_batch_size
  iterator.close()
  return {'examples_per_s': examples / wall, 'cpu_ms_per_example': 1e3 * cpu / examples}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--workers', type=int, default=None)
  parser.add_argument('--batches', type=int, default=20)
  parser.add_argument('--batch_size', type=int, default=64)
  args = parser.parse_args()
  n = args.batch_size * (args.batches + 4)
  images = _Images(n)
  for i in range(n):  # the records exist before timing: only the pipeline is measured
    images[i]  # pylint: disable=pointless-statement
  arms = {
      'imagenet_train': stream.StreamIterator(images, args.batch_size, shuffle=False,
                                              transform=stream.ImageTransform(224, train=True),
                                              num_workers=args.workers),
      'imagenet_eval': stream.StreamIterator(images, args.batch_size, shuffle=False,
                                             transform=stream.ImageTransform(224, train=False),
                                             num_workers=args.workers),
      'c4_rows': stream.StreamIterator(
          stream.TextRows(_documents(2 * n), 2048, docs_per_row=2), args.batch_size,
          shuffle=False, num_workers=args.workers),
      'arrays': stream.StreamIterator(
          stream.ArraySource({'inputs': np.zeros((n, 8, 8, 1), np.float32),
                              'label': np.zeros(n, np.int32)}), args.batch_size,
          num_workers=args.workers),
  }
  out = {name: measure(it, args.batches) for name, it in arms.items()}
  print(json.dumps({'batch_size': args.batch_size, 'batches': args.batches, **out}, indent=1))


if __name__ == '__main__':
  main()

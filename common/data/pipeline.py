"""The input pipeline: deterministic batches, as global jax arrays, from arrays in memory here and
from sources larger than a host in common.data.stream; the loop sees one interface for both.

Batch k of a run is a pure function of (seed, k): each epoch is a fresh permutation drawn from
`numpy.random.default_rng([seed, epoch])`, so the iterator's whole state is the number of batches
consumed. A resumed run sees exactly the batches an uninterrupted one would, on any number of
processes: each process takes its own contiguous rows of every global batch.
"""

from __future__ import annotations

import collections
import hashlib
from typing import Iterator

import jax
import numpy as np

from common import config_lib


def digest(array: np.ndarray) -> str:
  """'dtype[shape]:hash' of an array's contents (a run's identity records its data by this)."""
  array = np.ascontiguousarray(array)
  return f'{array.dtype}{list(array.shape)}:' + hashlib.blake2b(
      array.view(np.uint8).reshape(-1), digest_size=12).hexdigest()


class BatchOrder:
  """Which examples make global batch k: a pure function of (seed, k), split over processes.

  Each epoch is a fresh shuffle drawn from (seed, epoch): a permutation of all examples, or for
  sources past FULL_SHUFFLE_MAX examples (a web corpus) a shuffle of blocks of SHUFFLE_BLOCK
  examples and of the examples within each, so no index array of the whole source is held. The
  whole state is the number of batches consumed (`position`). Subclasses say what a batch holds.
  """

  FULL_SHUFFLE_MAX = 1 << 24
  SHUFFLE_BLOCK = 1 << 16

  def __init__(self, num_examples: int, global_batch_size: int, *, seed: int = 0,
               shuffle: bool = True, process_index: int | None = None,
               process_count: int | None = None):
    self.num_examples = int(num_examples)
    self.process_index = jax.process_index() if process_index is None else process_index
    self.process_count = jax.process_count() if process_count is None else process_count
    if isinstance(global_batch_size, bool) or int(global_batch_size) < 1:
      raise config_lib.ConfigError(f'Batch size {global_batch_size!r}: expected a whole number >= 1.')
    self.global_batch_size = int(global_batch_size)
    if self.global_batch_size % self.process_count:
      raise config_lib.ConfigError(
          f'Batch size {self.global_batch_size} does not divide over {self.process_count} '
          'processes.')
    if self.global_batch_size > self.num_examples:
      raise config_lib.ConfigError(
          f'Batch size {self.global_batch_size} exceeds the {self.num_examples} training examples.')
    self.local_batch_size = self.global_batch_size // self.process_count
    self.seed = seed
    self.shuffle = shuffle
    self.steps_per_epoch = self.num_examples // self.global_batch_size
    self.position = 0
    self._fingerprint = None
    self._perm_cache: collections.OrderedDict[tuple, np.ndarray] = collections.OrderedDict()

  # Checkpointable state: the number of batches handed out.
  def get_state(self) -> dict[str, int]:
    return {'position': int(self.position), 'seed': int(self.seed),
            'global_batch_size': self.global_batch_size}

  def set_state(self, state: dict[str, int]) -> None:
    if state.get('global_batch_size', self.global_batch_size) != self.global_batch_size:
      raise config_lib.ConfigError(
          f'The checkpoint was written with batch size {state["global_batch_size"]}, the config '
          f'asks for {self.global_batch_size}; resuming would change the data order.')
    self.position = int(state['position'])

  def _cached_permutation(self, key: tuple, n: int) -> np.ndarray:
    if key not in self._perm_cache:
      self._perm_cache[key] = np.random.default_rng([self.seed, *key]).permutation(n)
      while len(self._perm_cache) > 8:
        self._perm_cache.popitem(last=False)
    return self._perm_cache[key]

  def _permutation(self, epoch: int) -> np.ndarray:
    return self._cached_permutation((epoch,), self.num_examples)

  def _shuffled(self, epoch: int, positions: np.ndarray) -> np.ndarray:
    """The example at each position of `epoch`'s order."""
    if not self.shuffle:
      return positions
    if self.num_examples <= self.FULL_SHUFFLE_MAX:
      return self._permutation(epoch)[positions]
    size = self.SHUFFLE_BLOCK
    full_blocks = self.num_examples // size  # a short last block keeps its place
    block_order = self._cached_permutation((epoch, 0), full_blocks)
    out = positions.copy()
    in_full = positions < full_blocks * size
    for b in np.unique(positions[in_full] // size):
      hit = in_full & (positions // size == b)
      block = block_order[b]
      out[hit] = block * size + self._cached_permutation((epoch, 1, int(block)), size)[
          positions[hit] % size]
    return out

  def indices(self, k: int) -> np.ndarray:
    """Row indices of this process's part of global batch k."""
    rows = self.global_indices(k)
    lo = self.process_index * self.local_batch_size
    return rows[lo:lo + self.local_batch_size]

  def global_indices(self, k: int) -> np.ndarray:
    """Row indices of the whole global batch k (every process's rows)."""
    epoch, i = divmod(k, self.steps_per_epoch)
    positions = np.arange(i * self.global_batch_size, (i + 1) * self.global_batch_size)
    return self._shuffled(epoch, positions)

  def batch(self, k: int) -> dict[str, np.ndarray]:
    raise NotImplementedError

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    out = self.batch(self.position)
    self.position += 1
    return out


class BatchIterator(BatchOrder):
  """Global batches of `global_batch_size` rows of in-memory arrays; this process reads only its
  own rows."""

  def __init__(self, arrays: dict[str, np.ndarray], global_batch_size: int, **kwargs):
    if not arrays:
      raise ValueError('BatchIterator needs at least one array.')
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) != 1:
      raise ValueError(f'Arrays differ in length: {lengths}.')
    super().__init__(next(iter(lengths.values())), global_batch_size, **kwargs)
    self.arrays = arrays

  def fingerprint(self) -> dict[str, object]:
    """What fixes the batches: each array's shape, dtype and content hash, seed, shuffling."""
    if self._fingerprint is None:
      arrays = {key: digest(value) for key, value in sorted(self.arrays.items())}
      self._fingerprint = {'arrays': arrays, 'seed': int(self.seed), 'shuffle': self.shuffle,
                           'global_batch_size': self.global_batch_size}
    return self._fingerprint

  @property
  def nbytes(self) -> int:
    return sum(v.nbytes for v in self.arrays.values())

  def batch(self, k: int) -> dict[str, np.ndarray]:
    idx = self.indices(k)
    return {key: value[idx] for key, value in self.arrays.items()}


def to_global(local, sharding: jax.sharding.NamedSharding, batch_axis: int = 0):
  """Builds global arrays from this process's rows: axis `batch_axis` of every leaf is split over
  processes (0 for a batch; 1 for a chunk of batches, (chunk, batch, ...))."""
  if jax.process_count() == 1:
    # make_array_from_callback costs a quarter of jax.device_put's time for a batch on CPU
    # (46 vs 170 us an array, benchmarks/train_overhead.py's reference model): it skips
    # device_put's per-call checks; each device gets its slice.
    return jax.tree.map(
        lambda x: jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx]), local)

  def one(x):
    global_shape = list(x.shape)
    global_shape[batch_axis] *= jax.process_count()
    return jax.make_array_from_process_local_data(sharding, x, tuple(global_shape))
  return jax.tree.map(one, local)


class Prefetcher:
  """Keeps the coming batches in flight to the devices, ahead of the step that needs them.

  jax dispatches steps asynchronously, so gathering and transferring the next batches on the host
  overlaps with the device computing the current step; for in-memory arrays this beats a worker
  thread, whose hand-offs cost more than the gather itself (measured in
  benchmarks/train_overhead.py). Batches travel `chunk` at a time: one transfer of a
  (chunk, batch, ...) array per feature, from which each step takes its own slice on the devices,
  so the per-transfer cost (most of the host's work for small batches) is paid once per chunk.
  `chunk=None` chooses it from the first batch's size: as many as fit in `chunk_max_bytes`, at
  most MAX_CHUNK, at least 1 (large image batches go one at a time).
  The wrapped iterator's position counts batches *consumed* here, so checkpoints stay exact.
  """

  MAX_CHUNK = 16
  description = 'streamed from the host'

  def __init__(self, iterator: BatchOrder, sharding: jax.sharding.NamedSharding, depth: int = 2,
               limit: int | None = None, chunk: int | None = None,
               chunk_max_bytes: int = 16 * 2**20):
    """`depth`: batches kept ready beyond the current one; `limit`: the number of batches the run
    will consume in all (none are built past it)."""
    if chunk is not None and (isinstance(chunk, bool) or int(chunk) < 1):
      raise ValueError(f'chunk={chunk!r}: expected a whole number >= 1 or None (automatic).')
    self.iterator = iterator
    self.limit = limit
    self.sharding = sharding
    self.depth = max(0, int(depth))
    self.chunk = None if chunk is None else int(chunk)
    self.chunk_max_bytes = chunk_max_bytes
    spec = tuple(sharding.spec)
    self._chunk_sharding = jax.sharding.NamedSharding(
        sharding.mesh, jax.sharding.PartitionSpec(None, *spec))
    self._queue: collections.deque = collections.deque()  # [arrays, count, next to hand out]
    self._next_to_schedule = iterator.position

  def _choose_chunk(self, first: dict[str, np.ndarray]) -> int:
    nbytes = sum(np.asarray(v).nbytes for v in first.values())
    return max(1, min(self.MAX_CHUNK, self.chunk_max_bytes // max(nbytes, 1)))

  def _read_chunk(self):
    k = self._next_to_schedule
    count = self.chunk
    if count is None:  # the first read decides; the batch read to decide is kept
      first = self.iterator.batch(k)
      self.chunk = count = self._choose_chunk(first)
      rest = [first]
    else:
      rest = []
    if self.limit is not None:
      count = min(count, self.limit - k)
    parts = rest + [self.iterator.batch(j) for j in range(k + len(rest), k + count)]
    if count < self.chunk:  # the run's last batches: pad to keep one compiled shape
      parts += [parts[-1]] * (self.chunk - count)
    stacked = {key: np.stack([p[key] for p in parts]) for key in parts[0]}
    self._queue.append([to_global(stacked, self._chunk_sharding, batch_axis=1), count, 0])
    self._next_to_schedule += count

  def _ready(self) -> int:
    return sum(count - handed for _, count, handed in self._queue)

  def _schedule(self):
    while self._ready() < self.depth + 1:
      if self.limit is not None and self._next_to_schedule >= self.limit:
        return
      self._read_chunk()

  def materialise(self, item):
    """An item is (a chunk of global batches, the step's index in it): the slice, on the devices
    (traced inside the step)."""
    chunk, j = item
    batch = jax.tree.map(lambda a: a[j], chunk)
    return jax.lax.with_sharding_constraint(batch, self.sharding)

  def __iter__(self):
    return self

  def __next__(self):
    self._schedule()
    if not self._queue:
      raise StopIteration
    entry = self._queue[0]
    item = (entry[0], np.int32(entry[2]))
    entry[2] += 1
    if entry[2] == entry[1]:
      self._queue.popleft()
    self.iterator.position += 1
    return item

  def close(self):
    self._queue.clear()
    if hasattr(self.iterator, 'close'):
      self.iterator.close()  # a stream's worker threads


def replicate(arrays: dict[str, np.ndarray], mesh: jax.sharding.Mesh):
  """The same host arrays (identical on every process) as arrays replicated over `mesh`."""
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  return {k: jax.make_array_from_callback(v.shape, sharding, lambda idx, v=v: v[idx])
          for k, v in arrays.items()}


class DeviceIndexBatches:
  """For a training set that lives on the devices: the row indices of the coming steps.

  Each step receives (indices of `chunk` steps, position in the chunk) and gathers its batch on
  the devices, so a step costs no host gather and no transfer; one small index array is sent
  every `chunk` steps. Batch k holds exactly the rows of `iterator.batch(k)`.
  """

  description = 'on the devices'

  def __init__(self, iterator: BatchIterator, index_sharding, chunk: int = 256,
               limit: int | None = None, data=None, batch_sharding=None):
    """`data`: the training arrays already on the devices; `batch_sharding`: the batch's layout."""
    self.data = data
    self.batch_sharding = batch_sharding
    self.iterator = iterator
    self.index_sharding = index_sharding
    self.chunk = chunk
    self.limit = limit
    self._indices = None
    self._first = None

  def _load(self, first: int):
    last = first + self.chunk
    if self.limit is not None:
      last = min(last, self.limit)
    rows = np.stack([self.iterator.global_indices(k) for k in range(first, last)]).astype(np.int32)
    if len(rows) < self.chunk:  # pad the last chunk to keep one compiled shape
      rows = np.concatenate([rows, np.repeat(rows[-1:], self.chunk - len(rows), 0)])
    self._indices = jax.make_array_from_callback(rows.shape, self.index_sharding,
                                                 lambda idx: rows[idx])
    self._first = first

  def __iter__(self):
    return self

  def __next__(self):
    k = self.iterator.position
    if self.limit is not None and k >= self.limit:
      raise StopIteration
    if self._first is None or not self._first <= k < self._first + self.chunk:
      self._load(k)
    self.iterator.position += 1
    return self.data, self._indices, k - self._first

  def materialise(self, item):
    """Gathers the step's rows on the devices (traced inside the step)."""
    data, indices, j = item
    batch = jax.tree.map(lambda a: a[indices[j]], data)
    return jax.lax.with_sharding_constraint(batch, self.batch_sharding)

  def close(self):
    self._indices = None
    self.data = None


def make_batches(iterator: BatchOrder, mesh: jax.sharding.Mesh, batch_sharding, *,
                 limit: int | None = None, device_max_bytes: int = 256 * 2**20):
  """The loop's input: DeviceIndexBatches when the arrays fit in `device_max_bytes`, else a
  Prefetcher. Both yield items that their `materialise` turns into the global batch."""
  if isinstance(iterator, BatchIterator) and iterator.nbytes <= device_max_bytes:
    spec = batch_sharding.spec
    index_sharding = jax.sharding.NamedSharding(
        mesh, jax.sharding.PartitionSpec(None, spec[0] if spec else None))
    return DeviceIndexBatches(iterator, index_sharding, limit=limit,
                              data=replicate(iterator.arrays, mesh), batch_sharding=batch_sharding)
  return Prefetcher(iterator, batch_sharding, limit=limit)

"""Datasets that are always there: no network, deterministic, cached in a data dir.

- digits: scikit-learn's bundled 8x8 digits (1,797 images, 10 classes).
- mnist1d: the `mnist1d` package's generator (`make_dataset`, never its downloading `get_dataset`).
- stdlib_text: the docstrings of Python's standard library as bytes (English prose).
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import sys
import sysconfig
import tempfile

import numpy as np

TEST_FRACTION = 1 / 6  # digits: 300 of 1,797 images for test


def default_data_dir() -> str:
  return os.environ.get('GRP_DATA_DIR', os.path.join(os.path.expanduser('~'), '.cache', 'grp_data'))


class DataDirError(OSError):
  """The data dir (GRP_DATA_DIR or data_dir=) cannot hold the generated data."""


def check_writable(data_dir: str) -> str:
  """Fails before any data is generated when `data_dir` cannot be created or written."""
  try:
    os.makedirs(data_dir, exist_ok=True)
    with tempfile.TemporaryFile(dir=data_dir):
      pass
  except OSError as e:
    raise DataDirError(
        f'Cannot write the embedded data cache to {data_dir} ({e.strerror or e}). It is the '
        f'data_dir argument, or else $GRP_DATA_DIR (now {os.environ.get("GRP_DATA_DIR")!r}; '
        'default ~/.cache/grp_data): point GRP_DATA_DIR at a writable directory.') from e
  return data_dir


def _atomic_save_npz(path: str, **arrays) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix='.npz')
  with os.fdopen(fd, 'wb') as f:
    np.savez(f, **arrays)
  os.replace(tmp, path)  # readers never see a half-written file


def digits(split: str) -> dict[str, np.ndarray]:
  """8x8x1 float32 images in [0, 1] and int32 labels; a fixed 1,497 / 300 train/test split."""
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  raw = datasets.load_digits()
  images = (raw.images.astype(np.float32) / 16.0)[..., None]
  labels = raw.target.astype(np.int32)
  order = np.random.default_rng(0).permutation(len(labels))
  num_test = int(round(len(labels) * TEST_FRACTION))
  idx = order[num_test:] if split == 'train' else order[:num_test]
  return {'inputs': images[idx], 'label': labels[idx]}


def mnist1d(split: str, num_samples: int = 5000, seed: int = 42, train_fraction: float = 0.8,
            data_dir: str | None = None) -> dict[str, np.ndarray]:
  """(40, 1) float32 signals and int32 labels from mnist1d's generator, cached as .npz."""
  data_dir = data_dir or default_data_dir()
  path = os.path.join(data_dir, f'mnist1d_n{num_samples}_s{seed}_f{train_fraction}.npz')
  if not os.path.exists(path):
    check_writable(data_dir)
    from mnist1d import data as m1d  # pylint: disable=g-import-not-at-top
    args = m1d.get_dataset_args()
    args.num_samples, args.seed, args.train_split = num_samples, seed, train_fraction
    state = np.random.get_state()  # the generator reseeds numpy's global RNG; put it back
    try:
      ds = m1d.make_dataset(args)
    finally:
      np.random.set_state(state)
    _atomic_save_npz(path, x=ds['x'].astype(np.float32), y=ds['y'].astype(np.int32),
                     x_test=ds['x_test'].astype(np.float32), y_test=ds['y_test'].astype(np.int32))
  with np.load(path) as f:
    x, y = (f['x'], f['y']) if split == 'train' else (f['x_test'], f['y_test'])
  return {'inputs': x[..., None], 'label': y}


def _stdlib_files() -> list[str]:
  root = sysconfig.get_paths()['stdlib']
  paths = []
  for d, dirs, files in os.walk(root):
    dirs[:] = sorted(x for x in dirs if x not in ('site-packages', 'dist-packages', '__pycache__'))
    paths.extend(os.path.join(d, f) for f in sorted(files) if f.endswith('.py'))
  return paths


def build_stdlib_corpus() -> str:
  """Every module, class and function docstring of the standard library, in a fixed order."""
  chunks = []
  for path in _stdlib_files():
    try:
      with open(path, encoding='utf-8') as f:
        tree = ast.parse(f.read())
    except (SyntaxError, UnicodeDecodeError, ValueError):
      continue  # a few test files are deliberately broken
    for node in ast.walk(tree):
      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
        doc = ast.get_docstring(node)
        if doc:
          chunks.append(doc)
  return '\n\n'.join(chunks)


def stdlib_text(split: str, held_out_fraction: float = 0.05,
                data_dir: str | None = None) -> np.ndarray:
  """The corpus as a uint8 byte array; 'test' is its last `held_out_fraction`, 'train' the rest."""
  data_dir = data_dir or default_data_dir()
  tag = f'py{sys.version_info.major}{sys.version_info.minor}'
  path = os.path.join(data_dir, f'stdlib_text_{tag}.npz')
  if not os.path.exists(path):
    check_writable(data_dir)
    text = build_stdlib_corpus().encode('utf-8')
    meta = {'sha256': hashlib.sha256(text).hexdigest(), 'python': sys.version}
    _atomic_save_npz(path, data=np.frombuffer(text, np.uint8), meta=json.dumps(meta))
  with np.load(path) as f:
    data = f['data']
  cut = int(len(data) * (1 - held_out_fraction))
  return data[:cut] if split == 'train' else data[cut:]

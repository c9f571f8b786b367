"""Text tasks by name: a registry of the shape of seqio's, and the same tasks as seqio Tasks.

A task is a name and a function (split, seed) -> examples, each {'inputs': str, 'targets': str}
(a prompt and its answer) or {'targets': str} (plain text for language modelling):

    text_tasks.register(text_tasks.TextTask('my_task', my_examples, splits=('train', 'test')))
    rows = text_tasks.examples('stdlib_text', 'train')               # list of dicts of str
    ids = text_tasks.tokenized('stdlib_text', 'train')               # the same as byte-level ids

`register_seqio()` registers every task here into `seqio.TaskRegistry` (ByteVocabulary features
'inputs' and 'targets', a FunctionDataSource over the same examples, tokenized by seqio), so a
pipeline written against seqio reads them by name, and `tokenized(name, ...)` reads any seqio Task
or Mixture registered elsewhere (a C4 mixture, say) when the name is not one of ours. seqio comes
with the `[text]` extra (`pip install -e '.[text]'`: seqio 0.0.20 with tensorflow-text 2.21, which
installs beside tensorflow 2.21); without it this registry still serves its own tasks, and only
the seqio calls say what to install.

Tasks here: `stdlib_text` (the docstring corpus in documents of `document_bytes`), and whatever a
paper registers on import (pause/ registers its fine-tuning and algorithmic-text tasks).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable

import numpy as np

from common import config_lib
from common.data import loader

Example = dict[str, str]


@dataclasses.dataclass(frozen=True)
class TextTask:
  """`source(split, seed)` -> the split's examples (a list or iterable of dicts of str)."""
  name: str
  source: Callable[[str, int], Iterable[Example]]
  splits: tuple[str, ...] = ('train', 'test')
  description: str = ''


_REGISTRY: dict[str, TextTask] = {}


class TaskError(ValueError):
  """An unknown task or split, or a seqio call without seqio."""


def register(task: TextTask, *, replace: bool = False) -> TextTask:
  if task.name in _REGISTRY and not replace and _REGISTRY[task.name] != task:
    raise TaskError(f'Task {task.name!r} is already registered (replace=True to override).')
  _REGISTRY[task.name] = task
  return task


def get(name: str) -> TextTask:
  if name not in _REGISTRY:
    raise TaskError(f'Unknown text task {name!r}{config_lib.closest(name, _REGISTRY)}; '
                    f'registered: {sorted(_REGISTRY)}.')
  return _REGISTRY[name]


def names() -> list[str]:
  return sorted(_REGISTRY)


def examples(name: str, split: str, seed: int = 0) -> list[Example]:
  task = get(name)
  if split not in task.splits:
    raise TaskError(f'Task {name!r} has splits {task.splits}, not {split!r}.')
  return list(task.source(split, seed))


def encode(text: str) -> np.ndarray:
  """seqio ByteVocabulary ids of a string (bytes + 3), int32."""
  return np.frombuffer(text.encode('utf-8'), np.uint8).astype(np.int32) + loader.BYTE_OFFSET


def tokenized(name: str, split: str, seed: int = 0) -> list[dict[str, np.ndarray]]:
  """The task's examples as byte-level ids per feature. Our tasks are encoded here (the same ids
  seqio's ByteVocabulary gives); any other name is read through seqio's registries."""
  if name in _REGISTRY:
    return [{k: encode(v) for k, v in ex.items()} for ex in examples(name, split, seed)]
  seqio = import_seqio()
  try:
    provider = seqio.get_mixture_or_task(name)
  except ValueError as e:
    raise TaskError(f'{name!r} is neither a task here ({names()}) nor a seqio Task or Mixture: '
                    f'{e}') from e
  dataset = provider.get_dataset(sequence_length=None, split=split, shuffle=False, seed=seed)
  return [{k: np.asarray(v, np.int32) for k, v in ex.items() if k in ('inputs', 'targets')}
          for ex in dataset.as_numpy_iterator()]


# ---------------------------------------------------------------------------------------------
# seqio.
# ---------------------------------------------------------------------------------------------
def import_seqio():
  try:
    import seqio  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise TaskError("seqio is not installed: pip install -e '.[text]' (seqio 0.0.20, "
                    'tensorflow-text 2.21). The registry here serves its own tasks without it.'
                    ) from e
  return seqio


def seqio_available() -> bool:
  try:
    import_seqio()
  except TaskError:
    return False
  return True


def _features(task: TextTask) -> tuple[str, ...]:
  first = next(iter(task.source(task.splits[0], 0)), {'targets': ''})
  return tuple(k for k in ('inputs', 'targets') if k in first)


def register_seqio(task_names: Iterable[str] | None = None) -> list[str]:
  """Registers tasks of this registry (default: all) as seqio Tasks of the same names."""
  seqio = import_seqio()
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  vocab = seqio.ByteVocabulary()
  done = []
  for name in task_names or names():
    task = get(name)
    features = _features(task)

    def dataset_fn(split, shuffle_files=False, seed=None, task=task, features=features):
      del shuffle_files
      rows = list(task.source(split, 0 if seed is None else int(seed)))
      columns = {k: [r[k] for r in rows] for k in features}
      return tf.data.Dataset.from_tensor_slices(columns)

    if name in seqio.TaskRegistry.names():
      seqio.TaskRegistry.remove(name)
    seqio.TaskRegistry.add(
        name, source=seqio.FunctionDataSource(dataset_fn, splits=task.splits),
        preprocessors=[seqio.preprocessors.tokenize],
        output_features={k: seqio.Feature(vocab, add_eos=False) for k in features})
    done.append(name)
  return done


# ---------------------------------------------------------------------------------------------
# The docstring corpus as a task.
# ---------------------------------------------------------------------------------------------
def _stdlib_documents(split: str, seed: int, document_bytes: int = 1024) -> list[Example]:
  del seed
  ids = loader.load_text('stdlib_text', split)
  out = []
  for start in range(0, len(ids) - document_bytes + 1, document_bytes):
    out.append({'targets': loader.decode_bytes(ids[start:start + document_bytes])})
  return out


register(TextTask('stdlib_text', _stdlib_documents, description=(
    'The docstrings of the Python standard library in 1,024-byte documents.')))


def describe() -> dict[str, Any]:
  return {name: task.description for name, task in sorted(_REGISTRY.items())}

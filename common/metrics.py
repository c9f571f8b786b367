"""Metric writers: a JSON-lines file (easy to read back) and TensorBoard event files.

TensorBoard events are written with tensorboard's record writer directly, so writing metrics does
not import TensorFlow. Only process 0 writes.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from typing import Any, Mapping

import jax
import numpy as np


def _scalar(value) -> float | None:
  try:
    value = float(np.asarray(value))
  except (TypeError, ValueError):
    return None
  return value


class MetricWriter:
  """`write(step, {'loss': 0.3, ...})` appends to metrics.jsonl and a TensorBoard event file."""

  def __init__(self, workdir: str, *, resume_step: int = 0, tensorboard: bool = True,
               filename: str = 'metrics.jsonl', saved_records: list[dict] | None = None):
    """Keeps the records of an earlier run up to `resume_step` (the step resumed from).

    `saved_records`: the records the checkpoint carries; they replace the file's when the file
    has fewer (deleted or truncated), so a resumed run's history is never lost.
    """
    self.enabled = jax.process_index() == 0
    self.path = os.path.join(workdir, filename)
    # Records beyond the checkpoint were written by a run that crashed; they are redone.
    self.records = [r for r in read_jsonl(self.path) if r.get('step', 0) <= resume_step]
    saved = [r for r in saved_records or () if r.get('step', 0) <= resume_step]
    if len(saved) > len(self.records):
      self.records = saved
    self._tb = None
    if not self.enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    tmp = self.path + '.tmp'
    with open(tmp, 'w', encoding='utf-8') as f:
      f.writelines(json.dumps(r) + '\n' for r in self.records)
    os.replace(tmp, self.path)
    self._file = open(self.path, 'a', buffering=1, encoding='utf-8')
    if tensorboard:
      from tensorboard.compat.proto import event_pb2  # pylint: disable=g-import-not-at-top
      from tensorboard.compat.proto import summary_pb2  # pylint: disable=g-import-not-at-top
      from tensorboard.summary.writer import record_writer  # pylint: disable=g-import-not-at-top
      self._event_pb2, self._summary_pb2 = event_pb2, summary_pb2
      tb_dir = os.path.join(workdir, 'tensorboard')
      os.makedirs(tb_dir, exist_ok=True)
      name = f'events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}'
      self._tb_file = open(os.path.join(tb_dir, name), 'wb')
      self._tb = record_writer.RecordWriter(self._tb_file)
      self._tb.write(event_pb2.Event(wall_time=time.time(), file_version='brain.Event:2')
                     .SerializeToString())

  def write(self, step: int, metrics: Mapping[str, Any]) -> None:
    if not self.enabled or not metrics:
      return
    scalars = {k: _scalar(v) for k, v in metrics.items()}
    scalars = {k: v for k, v in scalars.items() if v is not None}
    record = {'step': int(step), 'time': time.time()}
    record.update({k: (v if math.isfinite(v) else str(v)) for k, v in scalars.items()})
    self._file.write(json.dumps(record) + '\n')
    if self._tb is not None:
      values = [self._summary_pb2.Summary.Value(tag=k, simple_value=v) for k, v in scalars.items()]
      event = self._event_pb2.Event(wall_time=time.time(), step=int(step),
                                    summary=self._summary_pb2.Summary(value=values))
      self._tb.write(event.SerializeToString())

  def flush(self):
    if self.enabled:
      self._file.flush()
      if self._tb is not None:
        self._tb_file.flush()

  def close(self):
    if self.enabled:
      self._file.close()
      if self._tb is not None:
        self._tb_file.close()


def read_jsonl(path: str) -> list[dict[str, Any]]:
  """The records of a metrics.jsonl; a torn last line (crash mid-write) is skipped."""
  records = []
  if not os.path.exists(path):
    return records
  with open(path, encoding='utf-8') as f:
    for line in f:
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  return records

"""Kill-and-resume: SIGKILL mid-training, rerun the same command, end bit-identical."""

import os
import signal
import time

import jax
import numpy as np
import pytest

from common import checkpoint as ckpt_lib
from common import metrics as metrics_lib
from tests.common.conftest import run_cli

FLAGS = ('--config.total_steps=3000', '--config.checkpoint_every_steps=250',
         '--config.log_every_steps=50', '--config.eval_every_steps=1000',
         '--config.model.widths=(128,128)')


def _final_state(workdir):
  checkpointer = ckpt_lib.Checkpointer(os.path.join(workdir, 'checkpoints'), save_every_steps=1)
  try:
    return checkpointer.latest_step(), checkpointer.restore_arrays()
  finally:
    checkpointer.close()


@pytest.mark.parametrize('source', ['memory', 'stream'])
def test_sigkill_then_resume_is_bit_identical(tmp_path, source):
  """In memory (on the devices), and streamed (common.data.stream: worker threads, prefetch)."""
  flags = FLAGS + (f'--config.input={source}',)
  straight, killed = str(tmp_path / 'straight'), str(tmp_path / 'killed')
  done = run_cli(straight, *flags)
  assert done.returncode == 0, done.stdout + done.stderr

  proc = run_cli(killed, *flags, background=True)
  ckpt_dir = os.path.join(killed, 'checkpoints')
  deadline = time.time() + 240
  while time.time() < deadline and proc.poll() is None:
    steps = [int(d) for d in (os.listdir(ckpt_dir) if os.path.isdir(ckpt_dir) else [])
             if d.isdigit()]
    if steps and max(steps) >= 500:
      break
    time.sleep(0.02)
  assert proc.poll() is None, 'the run ended before it could be killed'
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  killed_at = [r['step'] for r in metrics_lib.read_jsonl(os.path.join(killed, 'metrics.jsonl'))]
  assert killed_at and max(killed_at) < 3000

  resumed = run_cli(killed, *flags)
  assert resumed.returncode == 0, resumed.stdout + resumed.stderr
  assert 'Resumed from step' in resumed.stderr

  step_a, state_a = _final_state(straight)
  step_b, state_b = _final_state(killed)
  assert step_a == step_b == 3000
  jax.tree.map(np.testing.assert_array_equal, state_a, state_b)
  # The resumed run's log continues where the checkpoint left off, without duplicates.
  steps = [r['step'] for r in metrics_lib.read_jsonl(os.path.join(killed, 'metrics.jsonl'))
           if 'loss' in r]
  assert steps == list(range(50, 3001, 50))

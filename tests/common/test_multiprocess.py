"""Two processes on this machine (jax.distributed over localhost, 4 fake CPU devices each)."""

import socket

import numpy as np

from common import metrics as metrics_lib
from tests.common.conftest import run_cli

FLAGS = ('--config.total_steps=60', '--config.log_every_steps=10',
         '--config.checkpoint_every_steps=30', '--config.eval_every_steps=30',
         '--config.model.widths=(64,)')


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_processes_match_one(tmp_path):
  single = run_cli(str(tmp_path / 'single'), *FLAGS, devices=8)
  assert single.returncode == 0, single.stderr[-3000:]

  port = _free_port()
  workdir = str(tmp_path / 'multi')
  procs = [run_cli(workdir, *FLAGS, f'--coordinator_address=127.0.0.1:{port}',
                   '--num_processes=2', f'--process_id={i}', devices=4, background=True,
                   env={'JAX_CPU_COLLECTIVES_IMPLEMENTATION': 'gloo'}) for i in range(2)]
  outputs = [p.communicate(timeout=300)[0] for p in procs]
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-3000:]
  assert 'process 0 of 2, 4 local / 8 global devices' in outputs[0]

  def losses(name):
    records = metrics_lib.read_jsonl(str(tmp_path / name / 'metrics.jsonl'))
    return (np.array([r['loss'] for r in records if 'loss' in r]),
            [r['test/accuracy'] for r in records if 'test/accuracy' in r])

  loss_single, acc_single = losses('single')
  loss_multi, acc_multi = losses('multi')
  assert len(loss_single) == 6
  np.testing.assert_allclose(loss_multi, loss_single, rtol=1e-5)
  np.testing.assert_allclose(acc_multi, acc_single)

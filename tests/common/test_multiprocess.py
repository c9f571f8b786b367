"""Two processes on this machine (jax.distributed over localhost, 4 fake CPU devices each)."""

import os
import socket
import subprocess
import sys

import numpy as np

from common import metrics as metrics_lib
from tests.common.conftest import ONE_THREAD
from tests.common.conftest import REPO
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


def _ensemble_worker(workdir, out, devices, *flags):
  env = dict(os.environ, JAX_NUM_CPU_DEVICES=str(devices), JAX_CPU_COLLECTIVES_IMPLEMENTATION='gloo',
             **ONE_THREAD)
  return subprocess.Popen([sys.executable, '-m', 'tests.common.ensemble_worker',
                           f'--workdir={workdir}', f'--out={out}', *flags], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_an_ensemble_whose_model_axis_spans_two_processes_matches_one_process(tmp_path):
  # 4 models over 2 processes x 2 devices: each process holds 2 of them. Keys, the NaN guard,
  # the logged losses and predict() must reach across processes (each once read the arrays on
  # the host, which a process can do only for its own shards).
  one = _ensemble_worker(tmp_path / 'one', tmp_path / 'one.npz', 4)
  assert one.wait(timeout=300) == 0, one.communicate()[0][-3000:]
  for out in ('two.npz', 'resumed.npz'):  # the second run restores the first's checkpoint
    port = _free_port()
    procs = [_ensemble_worker(tmp_path / 'two', tmp_path / out, 2,
                              f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2',
                              f'--process_id={i}') for i in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    for p, log in zip(procs, outputs):
      assert p.returncode == 0, log[-3000:]
  single, multi = np.load(tmp_path / 'one.npz'), np.load(tmp_path / 'two.npz')
  assert int(multi['processes']) == 2 and int(multi['devices']) == int(single['devices']) == 4
  assert multi['logits'].shape == (4, 64, 10)
  np.testing.assert_allclose(multi['loss'], single['loss'], rtol=1e-6)
  np.testing.assert_allclose(multi['logits'], single['logits'], rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(np.load(tmp_path / 'resumed.npz')['logits'], multi['logits'])

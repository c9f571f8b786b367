"""common.app: the config path from any directory, the check before anything runs, the workdir's
lock, the compilation-cache flag."""

import errno
import logging as std_logging
import os
import subprocess
import sys

from absl.testing import flagsaver
import pytest

from common import app
from tests.common.conftest import ONE_THREAD
from tests.common.conftest import REPO

CONFIG = 'configs/common/classifier.py:cpu'


# --- The README's relative config path works from another directory. --------------------------
def test_relative_config_path_is_read_from_the_repository_from_another_directory(tmp_path):
  argv = ['prog', f'--config={CONFIG}', '--workdir=w', '--config.seed=1']
  resolved = app.resolve_config_path(argv, cwd=str(tmp_path))
  assert resolved == ['prog', f'--config={REPO}/{CONFIG}', '--workdir=w', '--config.seed=1']
  assert app.resolve_config_path(['prog', '--config', CONFIG], cwd=str(tmp_path)) == [
      'prog', '--config', f'{REPO}/{CONFIG}']


def test_config_path_found_from_the_current_directory_or_nowhere_is_left_alone(tmp_path):
  (tmp_path / 'configs' / 'common').mkdir(parents=True)
  (tmp_path / 'configs' / 'common' / 'classifier.py').write_text('')
  argv = ['prog', f'--config={CONFIG}']
  assert app.resolve_config_path(argv, cwd=str(tmp_path)) == argv  # the user's own copy wins
  for value in ('configs/common/nope.py:cpu', '/abs/configs/common/classifier.py'):
    argv = ['prog', f'--config={value}']
    assert app.resolve_config_path(argv, cwd=str(tmp_path)) == argv


def test_binary_from_another_directory_reads_the_config_and_checks_it_before_anything(tmp_path):
  """The README's command from another directory finds its config (no 'No such file'), and a bad
  value stops before the workdir is touched: no lock, no config.json, no cache."""
  env = dict(os.environ, **ONE_THREAD, PYTHONPATH=REPO, JAX_NUM_CPU_DEVICES='1')
  workdir = tmp_path / 'run'
  out = subprocess.run(
      [sys.executable, '-m', 'common.main', f'--config={CONFIG}', f'--workdir={workdir}',
       '--config.optimizer.learning_rate=-0.1'],
      cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode != 0
  assert "No such file or directory: 'configs/" not in out.stderr
  assert 'config.optimizer.learning_rate=-0.1: expected a finite number > 0' in out.stderr
  assert not workdir.exists()


# --- One run at a time in a workdir. ------------------------------------------------------------
HOLD = ('import sys; from common import app\n'
        'with app.workdir_lock(sys.argv[1]):\n'
        '  print("locked", flush=True); sys.stdin.read()\n')


@pytest.fixture
def held(tmp_path):
  """A workdir whose lock another live process holds (through app.workdir_lock)."""
  workdir = tmp_path / 'run'
  env = dict(os.environ, **ONE_THREAD, PYTHONPATH=REPO, JAX_NUM_CPU_DEVICES='1')
  child = subprocess.Popen([sys.executable, '-c', HOLD, str(workdir)], cwd=REPO, env=env,
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
  try:
    assert child.stdout.readline().strip() == 'locked'
    yield workdir, child.pid
  finally:
    child.stdin.close()  # the child leaves its block and exits
    child.wait(timeout=60)
  assert not (workdir / app.LOCK_FILE).exists()  # released at exit


def test_second_run_in_a_workdir_in_use_stops_before_it_starts(held):
  workdir, pid = held
  with pytest.raises(app.WorkdirInUseError, match=f'workdir in use by process {pid}'):
    with app.workdir_lock(str(workdir)):
      pass
  called = []
  with pytest.raises(app.WorkdirInUseError, match=f'process {pid}'):
    app.run_recorded(lambda c, w: called.append(w), None, str(workdir), [])
  assert not called and not (workdir / 'config.json').exists()


def _dead_pid() -> int:
  child = subprocess.Popen(['true'])
  child.wait()
  return child.pid


def test_stale_lock_of_a_dead_process_is_taken_over_with_a_log_line(tmp_path, caplog):
  lock = tmp_path / app.LOCK_FILE
  pid = _dead_pid()
  lock.write_text(f'{pid} host-of-old\n')
  with caplog.at_level(std_logging.WARNING):
    with app.workdir_lock(str(tmp_path)):
      assert lock.read_text().split()[0] == str(os.getpid())
  assert f'stale lock {lock} of process {pid}' in caplog.text
  assert not lock.exists()


def test_lock_naming_a_live_process_is_not_taken(tmp_path):
  """Without the kernel's lock (a file system without flock), a recorded PID that is alive
  still counts as in use."""
  sleeper = subprocess.Popen(['sleep', '60'])
  try:
    (tmp_path / app.LOCK_FILE).write_text(f'{sleeper.pid}\n')
    with pytest.raises(app.WorkdirInUseError, match=f'in use by process {sleeper.pid}.*delete'):
      with app.workdir_lock(str(tmp_path)):
        pass
  finally:
    sleeper.kill()
    sleeper.wait()


def test_on_a_file_system_without_flock_the_pid_guards_the_workdir(tmp_path, monkeypatch):
  def no_flock(fd, op):
    raise OSError(errno.ENOLCK, 'No locks available')

  monkeypatch.setattr(app.fcntl, 'flock', no_flock)
  with app.workdir_lock(str(tmp_path)):  # free: taken
    assert (tmp_path / app.LOCK_FILE).read_text().split()[0] == str(os.getpid())
  sleeper = subprocess.Popen(['sleep', '60'])
  try:
    (tmp_path / app.LOCK_FILE).write_text(f'{sleeper.pid}\n')
    with pytest.raises(app.WorkdirInUseError, match=f'in use by process {sleeper.pid}'):
      with app.workdir_lock(str(tmp_path)):
        pass
  finally:
    sleeper.kill()
    sleeper.wait()


def test_a_process_may_enter_its_own_lock_again(tmp_path):
  with app.workdir_lock(str(tmp_path)):
    with app.workdir_lock(str(tmp_path)):
      pass
    assert (tmp_path / app.LOCK_FILE).exists()
  assert not (tmp_path / app.LOCK_FILE).exists()


# --- One compilation-cache switch. --------------------------------------------------------------
def test_compilation_cache_flag_defaults_to_the_workdir_and_empty_turns_it_off():
  assert app.cache_directory('/w') == '/w/jax_cache'
  with flagsaver.flagsaver(compilation_cache=''):
    assert app.cache_directory('/w') is None
  with flagsaver.flagsaver(compilation_cache='/shared/cache'):
    assert app.cache_directory('/w') == '/shared/cache'



def test_every_paper_binary_passes_its_check_config():
  """`app.run(experiment.run, experiment.check_config)`: the config is checked before anything."""
  mains = sorted(os.path.join(d, 'main.py') for d in os.listdir(REPO)
                 if os.path.isfile(os.path.join(REPO, d, 'main.py')))
  assert len(mains) >= 10
  read = lambda m: open(os.path.join(REPO, m), encoding='utf-8').read()  # pylint: disable=consider-using-with
  missing = [m for m in mains if 'check_config' not in read(m)]
  assert not missing, f'app.run(fn, check_config) not passed in {missing}'

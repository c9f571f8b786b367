"""The main job: runs the chosen experiments and writes one report."""

import json
import os
import subprocess
import textwrap

import pytest

import reproduce


@pytest.fixture(scope='module')
def job(tmp_path_factory):
  """The classifier run by the main job, then the same command again (a rerun that resumes the
  finished run): (job workdir, the first run's recorded seconds)."""
  root = tmp_path_factory.mktemp('job')
  assert reproduce.main([f'--workdir={root}', '--only=classifier']) == 0
  first = json.loads((root / reproduce.TIMINGS).read_text())['classifier']['seconds']
  assert reproduce.main([f'--workdir={root}', '--only=classifier']) == 0
  return root, first


def test_main_job_writes_the_report(job):
  root, _ = job
  report = (root / 'report.md').read_text()
  assert 'Reference classifier' in report and 'reproduced' in report
  combined = json.loads((root / 'summary.json').read_text())
  assert combined['experiments']['classifier']['reproduced'] is True
  assert combined['failures'] == {}
  assert '**Final evaluation**' in report
  # A cpu job is compared with the recorded results (results/cpu/classifier.json), check by check.
  assert '**Against the recorded results**' in report and '| 0 of 1 moved (a reseed: ~0.0) |' in report
  assert not (root / 'workdir.lock').exists() and not (root / 'classifier' / 'workdir.lock').exists()


def test_rerun_keeps_the_first_runs_time_and_shows_its_own_beside_it(job):
  root, first = job
  timings = json.loads((root / reproduce.TIMINGS).read_text())['classifier']
  assert timings['seconds'] == first and len(timings['reruns']) == 1
  rerun = timings['reruns'][0]
  assert rerun < first  # the rerun only resumed the finished run
  assert json.loads((root / 'summary.json').read_text())['timings']['classifier'] == first
  report = (root / 'report.md').read_text()
  assert f'Wall time: {first:.0f} s.' in report  # the first run's time
  assert '## Reruns' in report and f'| classifier | {first:.1f} s | {rerun:.1f} s |' in report


def test_timings_of_a_workdir_from_before_timings_json_are_kept(tmp_path):
  (tmp_path / 'summary.json').write_text(json.dumps({'timings': {'iwes': 67.6}}))
  timings = reproduce._load_timings(str(tmp_path))  # pylint: disable=protected-access
  reproduce.record_timing(timings, 'iwes', 'cpu', 1.2, finished_before=True)
  assert timings['iwes'] == {'variant': 'cpu', 'seconds': 67.6, 'reruns': [1.2]}
  reproduce.record_timing(timings, 'iwes', 'study', 900.0, finished_before=True)  # another run
  assert timings['iwes'] == {'variant': 'study', 'seconds': 900.0, 'reruns': []}


def test_every_paper_package_in_the_repo_is_in_the_main_job():
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  papers = {d for d in os.listdir(root) if os.path.isfile(os.path.join(root, d, 'experiment.py'))}
  listed = {module.split('.')[0] for _, module, _, _ in reproduce.EXPERIMENTS}
  assert papers <= listed


def test_unknown_experiment_is_refused(tmp_path):
  with pytest.raises(SystemExit):
    reproduce.main([f'--workdir={tmp_path}', '--only=resmen'])


# --- --variant: a misspelt one is refused; one that only some offer says who falls back. --------
def test_unknown_variant_is_refused_with_the_variants_each_experiment_offers(tmp_path, capsys):
  with pytest.raises(SystemExit) as exit_info:
    reproduce.main([f'--workdir={tmp_path}', '--variant=studdy'])
  assert exit_info.value.code == 2
  err = capsys.readouterr().err
  assert "Unknown variant 'studdy'" in err
  assert 'classifier: cpu, mnist1d, cifar10, imagenet' in err and 'fire_pe: cpu, study' in err
  assert not list(tmp_path.iterdir())  # nothing ran


def test_variant_offered_by_some_says_which_fall_back(tmp_path, capsys, monkeypatch):
  variants, fallback = reproduce.choose_variants('study', reproduce.EXPERIMENTS)
  assert variants['fire_pe'] == 'study' and variants['classifier'] == 'cpu'
  assert 'classifier' in fallback and 'cascades' in fallback and 'fire_pe' not in fallback
  monkeypatch.setattr(reproduce, 'check_configs', lambda *a: ({}, {'x': 'stop here'}))
  assert reproduce.main([f'--workdir={tmp_path}', '--only=classifier,fire_pe',
                         '--variant=study']) == 2
  assert "Variant 'study' is not offered by classifier: they fall back to 'cpu'." in (
      capsys.readouterr().out)


# --- Every config is checked before the first experiment starts. --------------------------------
@pytest.fixture
def fake_papers(tmp_path, monkeypatch):
  """Two fake experiments beside the classifier: one whose check refuses its config, one without
  check_config."""
  (tmp_path / 'fake_config.py').write_text(textwrap.dedent('''
      import ml_collections
      VARIANTS = ('cpu',)
      def get_config(arg=None):
        return ml_collections.ConfigDict({'steps': 0})
  '''))
  (tmp_path / 'fake_refusing.py').write_text(textwrap.dedent('''
      from common import config_lib
      def check_config(config):
        raise config_lib.ConfigError(f'steps={config.steps}: expected a whole number >= 1.')
      def run(config, workdir):
        raise AssertionError('ran')
  '''))
  (tmp_path / 'fake_unchecked.py').write_text('def run(config, workdir):\n  pass\n')
  monkeypatch.syspath_prepend(str(tmp_path))
  monkeypatch.setattr(reproduce, 'EXPERIMENTS', reproduce.EXPERIMENTS[:1] + (
      ('refusing', 'fake_refusing', 'fake_config', 'cpu'),
      ('unchecked', 'fake_unchecked', 'fake_config', 'cpu')))
  return tmp_path / 'job'


def test_a_bad_config_stops_the_job_before_the_first_experiment(fake_papers, capsys):
  assert reproduce.main([f'--workdir={fake_papers}']) == 2
  err = capsys.readouterr().err
  assert 'refusing: fake_config:cpu: ConfigError: steps=0: expected a whole number >= 1.' in err
  assert 'fake_unchecked has no check_config(config)' in err
  assert not fake_papers.exists()  # the classifier, listed first, did not start


# --- The job's workdir is locked. ---------------------------------------------------------------
def test_job_workdir_in_use_stops_before_anything_runs(tmp_path, capsys):
  sleeper = subprocess.Popen(['sleep', '60'])  # a live process named in the lock
  try:
    (tmp_path / 'workdir.lock').write_text(f'{sleeper.pid}\n')
    assert reproduce.main([f'--workdir={tmp_path}', '--only=classifier']) == 1
  finally:
    sleeper.kill()
    sleeper.wait()
  assert f'workdir in use by process {sleeper.pid}' in capsys.readouterr().err
  assert not (tmp_path / 'classifier').exists()

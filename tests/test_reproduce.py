"""The main job: runs the chosen experiments and writes one report."""

import json

import pytest

import reproduce


def test_main_job_writes_the_report(tmp_path):
  assert reproduce.main([f'--workdir={tmp_path}', '--only=classifier']) == 0
  report = (tmp_path / 'report.md').read_text()
  assert 'Reference classifier' in report and 'reproduced' in report
  combined = json.loads((tmp_path / 'summary.json').read_text())
  assert combined['experiments']['classifier']['reproduced'] is True
  assert combined['failures'] == {}
  assert '| 1 of 1 |' in report and '**Final evaluation**' in report


def test_every_paper_package_in_the_repo_is_in_the_main_job():
  import os  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  papers = {d for d in os.listdir(root) if os.path.isfile(os.path.join(root, d, 'experiment.py'))}
  listed = {module.split('.')[0] for _, module, _, _ in reproduce.EXPERIMENTS}
  assert papers <= listed


def test_unknown_experiment_is_refused(tmp_path):
  with pytest.raises(SystemExit):
    reproduce.main([f'--workdir={tmp_path}', '--only=resmen'])

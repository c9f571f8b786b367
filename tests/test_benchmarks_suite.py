"""benchmarks.suite (the GPU suite) at its tiny sizes on CPU: one JSON in which every entry ran,
with its time, FLOPs, rate and peak fraction, and the device and machine named; the peak table;
failures recorded rather than lost."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import hardware
from benchmarks import suite
from common.models import transformer

ARMS = {
    'attention': {'blockwise_none', 'fire', 'fire_s', 'dot_product_attention'},
    'knn': {'jax_plain', 'kernel', 'faiss'},
    'ensemble': {'loop', 'ensemble'},
    'mrf': {'backbone', 'lowrank', 'dense'},
    'decoding': {'recompute', 'kv'},
}


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
  out = tmp_path_factory.mktemp('suite') / 'suite.json'
  status = suite.main(['--size=tiny', f'--out={out}'])
  with open(out, encoding='utf-8') as f:
    return status, json.load(f)


def test_the_tiny_suite_runs_every_arm_of_every_section_into_one_json(tiny_run):
  status, result = tiny_run
  assert status == 0
  assert result['size'] == 'tiny'
  assert set(result['sections']) == set(suite.SECTIONS)
  for section, arms in ARMS.items():
    found = {e['arm'] for e in result['entries'] if e['section'] == section}
    assert found == arms, section
  for entry in result['entries']:
    if entry['arm'] == 'faiss' and entry['status'] == 'skipped':  # faiss is optional
      assert 'faiss' in entry['reason']
      continue
    assert entry['status'] == 'ok', entry
    assert entry['seconds'] > 0 and entry['flops'] > 0, entry
    assert entry['flops_per_s'] == pytest.approx(entry['flops'] / entry['seconds'])
    assert entry['peak_flops_per_s'] is None and entry['peak_fraction'] is None  # a CPU
    assert entry['vs_baseline'] > 0 and entry['baseline'] in ARMS[entry['section']]
  counts = result['summary']['entries']
  assert counts['error'] == 0 and counts['ok'] + counts['skipped'] == len(result['entries'])
  assert result['summary']['time_ratios']


def test_the_markdown_table_has_a_row_per_entry(tiny_run):
  _, result = tiny_run
  rows = [l for l in suite.table(result).splitlines() if l.startswith('| ') and '---' not in l]
  assert len(rows) == 1 + len(result['entries'])
  assert result['device']['name'] in suite.table(result)


def test_the_json_names_the_device_and_the_machine(tiny_run):
  _, result = tiny_run
  assert result['device']['name'] == jax.devices()[0].device_kind
  assert result['device']['peak_flops'] == {'float32': None, 'bfloat16': None}
  machine = result['machine']
  assert machine['cpu_model'] and machine['cpu_cores'] >= 1 and machine['jax'] == jax.__version__


def test_the_arms_of_a_case_compute_the_same_answer(tiny_run):
  _, result = tiny_run
  by = {(e['section'], e['arm']): e for e in result['entries']}
  assert by[('knn', 'kernel')]['same_neighbours_as_jax_plain'] == 1.0
  assert by[('decoding', 'kv')]['same_tokens_as_recompute'] is True
  # the same useful FLOPs for every arm of a case; the kv cache does less work than recomputing
  attention = {e['flops'] for e in result['entries'] if e['section'] == 'attention'}
  assert len(attention) == 1
  assert by[('decoding', 'kv')]['flops'] < by[('decoding', 'recompute')]['flops']


@pytest.mark.parametrize('kind, dtype, precision, expected', [
    ('NVIDIA H100 80GB HBM3', 'float32', None, 494.7e12),      # TF32 tensor cores
    ('NVIDIA H100 80GB HBM3', 'bfloat16', None, 989.4e12),
    ('NVIDIA H100 80GB HBM3', 'float32', 'highest', 66.9e12),  # full float32
    ('NVIDIA H100 PCIe', 'bfloat16', None, 756e12),
    ('NVIDIA H200', 'bfloat16', None, 989.4e12),
    ('NVIDIA A100-SXM4-80GB', 'float32', None, 156e12),
    ('TPU v4', 'float32', None, 275e12),
    ('TPU v5 lite', 'bfloat16', None, 197e12),
    ('TPU v4 lite', 'bfloat16', None, None),                   # another chip
    ('NVIDIA GeForce RTX 4090', 'float32', None, None),        # not in the table
    ('cpu', 'float32', None, None),
])
def test_the_peak_table_knows_its_devices_and_gives_null_for_others(kind, dtype, precision,
                                                                     expected):
  assert hardware.peak(kind, dtype, precision)[0] == expected


def test_a_failing_arm_is_recorded_and_the_next_arm_still_runs():
  ok = lambda: suite._entry('s', 'c', 'b', 2.0, 4.0)
  entries = suite._arms('s', 'c', [('a', lambda: 1 / 0), ('b', ok)])
  assert entries[0]['status'] == 'error' and 'ZeroDivisionError' in entries[0]['error']
  assert entries[1]['status'] == 'ok' and entries[1]['flops_per_s'] == 2.0
  assert suite.summary(entries)['entries'] == {'ok': 1, 'skipped': 0, 'error': 1}


def test_a_section_that_fails_is_recorded_and_the_exit_status_is_1(tmp_path, monkeypatch):
  def broken(sizes):
    raise RuntimeError(f'no device for {sizes["q"]} queries')
  monkeypatch.setitem(suite.RUNNERS, 'knn', broken)
  out = tmp_path / 'suite.json'
  assert suite.main(['--size=tiny', '--only=knn', f'--out={out}']) == 1
  entry, = json.loads(out.read_text())['entries']
  assert entry['status'] == 'error' and 'no device for 48 queries' in entry['error']


@pytest.mark.parametrize('argv, message', [
    (['--only=knn,gpu'], "unknown section(s) ['gpu']"),
    (['--size=huge'], "invalid choice: 'huge'"),
    (['--repeats=0'], '--repeats=0: expected a whole number >= 1'),
])
def test_a_bad_flag_is_refused_naming_it(argv, message, capsys):
  with pytest.raises(SystemExit):
    suite.parse(argv)
  assert message in capsys.readouterr().err


def test_the_transformer_flop_count_is_the_matmuls_of_xlas_own_count():
  """The analytic count against XLA's (which adds the elementwise work: norms, softmax, GELU)."""
  model = transformer.MaskedTokenTransformer(codebook_size=512, num_classes=10, num_tokens=64,
                                             num_layers=2, d_model=64, num_heads=2, mlp_dim=256)
  tokens = jnp.full((2, 64), model.mask_id, jnp.int32)
  labels = jnp.zeros((2,), jnp.int32)
  params = jax.jit(model.init)(jax.random.key(0), tokens[:1], labels[:1])
  cost = jax.jit(model.apply).lower(params, tokens, labels).compile().cost_analysis()
  xla = (cost[0] if isinstance(cost, list) else cost)['flops']
  ours = 2 * suite.transformer_flops(params, 2, 64, np.full(65, 65))
  assert 0.9 * xla <= ours <= xla

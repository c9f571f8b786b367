"""The machine a benchmark ran on, for the GPU suite's JSON (benchmarks/suite.py): the device (jax's
device_kind, its memory, its peak FLOP/s from a small table) and the host (CPU model, cores,
memory, versions, XLA_FLAGS), so that numbers from different machines can be compared."""

import os
import platform

import jax

# Dense peak FLOP/s per chip from the vendors' data sheets (no sparsity): (substrings of jax's
# device_kind, lower case, all required; label, bfloat16, float32 at JAX's default matmul
# precision (TF32 on NVIDIA's tensor cores, one bfloat16 pass on a TPU), float32 in full).
# The first row that matches wins.
PEAKS = (
    (('h100', 'pcie'), 'H100 PCIe', 756e12, 378e12, 51.2e12),
    (('h100', 'nvl'), 'H100 NVL', 835e12, 417.5e12, 60e12),
    (('h100',), 'H100 SXM', 989.4e12, 494.7e12, 66.9e12),
    (('h200', 'nvl'), 'H200 NVL', 835e12, 417.5e12, 60e12),
    (('h200',), 'H200 SXM', 989.4e12, 494.7e12, 66.9e12),
    (('a100',), 'A100', 312e12, 156e12, 19.5e12),
    (('tpu v4',), 'TPU v4', 275e12, 275e12, None),
    (('tpu v5 lite',), 'TPU v5e', 197e12, 197e12, None),
    (('tpu v5e',), 'TPU v5e', 197e12, 197e12, None),
)
_FULL_FLOAT32 = ('highest', 'float32', 'F32_F32_F32')


def peak(device_kind: str, dtype: str, precision: str | None = None):
  """(peak FLOP/s, the table's label and column) for an arm computing in `dtype` on this device
  kind, or (None, None) for one the table does not know (a CPU, or a chip not in PEAKS)."""
  kind = device_kind.lower()
  if 'lite' in kind and 'v4' in kind:  # TPU v4 lite (v4i) is another chip
    return None, None
  for keys, label, bf16, f32_default, f32_full in PEAKS:
    if all(k in kind for k in keys):
      if dtype in ('bfloat16', 'float16'):
        return bf16, f'{label} bf16'
      if precision in _FULL_FLOAT32:
        return f32_full, f'{label} fp32'
      return f32_default, f'{label} ' + ('tf32' if label.startswith(('H', 'A')) else 'bf16')
  return None, None


# ---------------------------------------------------------------------------------------------
# The machine and the device.
# ---------------------------------------------------------------------------------------------
def _cpu_model() -> str:
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def _memory_gb():
  try:
    with open('/proc/meminfo', encoding='utf-8') as f:
      return round(int(f.readline().split()[1]) / 2**20, 1)  # MemTotal, kB
  except (OSError, ValueError, IndexError):
    return None


def machine() -> dict:
  """The host: CPU model, cores (all, and those this process may use), memory, versions."""
  affinity = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else None
  return {'cpu_model': _cpu_model(), 'cpu_cores': os.cpu_count(), 'cpu_cores_usable': affinity,
          'memory_gb': _memory_gb(), 'platform': platform.platform(),
          'python': platform.python_version(), 'jax': jax.__version__,
          'jaxlib': getattr(jax.lib, '__version__', None) or _jaxlib_version(),
          'xla_flags': os.environ.get('XLA_FLAGS')}


def _jaxlib_version():
  try:
    import jaxlib  # pylint: disable=g-import-not-at-top
    return jaxlib.__version__
  except (ImportError, AttributeError):
    return None


def device() -> dict:
  """The device every arm runs on (the first), its memory and its peaks (PEAKS, or null)."""
  dev = jax.devices()[0]
  precision = jax.config.jax_default_matmul_precision
  f32_peak, f32_label = peak(dev.device_kind, 'float32', precision)
  bf16_peak, bf16_label = peak(dev.device_kind, 'bfloat16', precision)
  memory = None
  try:
    stats = dev.memory_stats() or {}
    memory = round(stats['bytes_limit'] / 2**30, 1) if 'bytes_limit' in stats else None
  except Exception:  # pylint: disable=broad-except  (not every backend has memory stats)
    pass
  return {'name': dev.device_kind, 'platform': dev.platform, 'backend': jax.default_backend(),
          'count': jax.device_count(), 'memory_gb': memory,
          'default_matmul_precision': precision,
          'peak_flops': {'float32': f32_peak, 'bfloat16': bf16_peak},
          'peak_source': {'float32': f32_label, 'bfloat16': bf16_label}}

"""Timing shared by the benchmarks: CPU-seconds of a jax computation, compilation excluded."""

import time

import jax


def cpu_seconds(fn, repeats: int) -> float:
  """The least CPU time of `repeats` calls of fn() (noise only adds time), after one call that
  compiles and warms up; waits for the results each time."""
  jax.block_until_ready(fn())
  best = float('inf')
  for _ in range(repeats):
    start = time.process_time()
    jax.block_until_ready(fn())
    best = min(best, time.process_time() - start)
  return best

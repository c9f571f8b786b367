"""Timing shared by the benchmarks: CPU-seconds of a jax computation, compilation excluded."""

import time

import jax


def timed(fn, repeats: int):
  """(the least CPU time of `repeats` calls of fn(), the last call's output), after one call that
  compiles and warms up; waits for the results each time (noise only adds time)."""
  jax.block_until_ready(fn())
  best, out = float('inf'), None
  for _ in range(repeats):
    start = time.process_time()
    out = jax.block_until_ready(fn())
    best = min(best, time.process_time() - start)
  return best, out


def cpu_seconds(fn, repeats: int) -> float:
  """The least CPU time of `repeats` calls of fn(), compilation excluded (`timed` without the
  output)."""
  return timed(fn, repeats)[0]

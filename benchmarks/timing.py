"""Timing shared by the benchmarks: seconds of a jax computation, compilation excluded.

The CPU benchmarks count CPU time (`time.process_time`, the default clock): on one pinned core it
is the work done, and other processes' load does not inflate it. On an accelerator the host only
waits, so its CPU time is not the device's: the GPU suite (benchmarks/suite.py) passes
`clock=time.perf_counter` (wall time).
"""

import time

import jax


def timed(fn, repeats: int, clock=time.process_time):
  """(the least time of `repeats` calls of fn() by `clock`, the last call's output), after one
  call that compiles and warms up; waits for the results each time (noise only adds time)."""
  jax.block_until_ready(fn())
  best, out = float('inf'), None
  for _ in range(repeats):
    start = clock()
    out = jax.block_until_ready(fn())
    best = min(best, clock() - start)
  return best, out


def cpu_seconds(fn, repeats: int) -> float:
  """The least CPU time of `repeats` calls of fn(), compilation excluded (`timed` without the
  output)."""
  return timed(fn, repeats)[0]


def wall_seconds(fn, repeats: int) -> float:
  """The least wall time of `repeats` calls of fn(), compilation excluded: what an accelerator's
  work takes (the host's CPU time is not it)."""
  return timed(fn, repeats, clock=time.perf_counter)[0]

"""The paper's stylised regression: a capacity-limited linear base plus ResMem on its residuals.

x ~ U[-1, 1]^d, y = <beta*, x> + noise * eps. The base is least squares constrained to
||beta|| <= fraction * ||beta*||, so it cannot fit the target however much data it sees; ResMem adds
the mean residual of the k = n^(2/5) nearest training points (uniform weights). The excess test risk
E[(f(x) - <beta*, x>)^2] of the base stays flat in n; ResMem's falls towards 0.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from resmem import memory as memory_lib


@dataclasses.dataclass(frozen=True)
class Problem:
  dim: int
  noise: float = 0.1
  norm_fraction: float = 0.5

  @property
  def beta(self) -> np.ndarray:
    return np.ones(self.dim) / np.sqrt(self.dim)  # ||beta*|| = 1

  def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = rng.uniform(-1.0, 1.0, size=(n, self.dim))
    return x, x @ self.beta + self.noise * rng.standard_normal(n)


def constrained_least_squares(x: np.ndarray, y: np.ndarray, radius: float) -> np.ndarray:
  """argmin ||x b - y||^2 subject to ||b|| <= radius (ridge, its multiplier found by bisection)."""
  gram, xty = x.T @ x, x.T @ y
  solve = lambda lam: np.linalg.solve(gram + lam * np.eye(len(gram)), xty)
  b = np.linalg.lstsq(x, y, rcond=None)[0]
  if np.linalg.norm(b) <= radius:
    return b
  lo, hi = 0.0, 1.0
  while np.linalg.norm(solve(hi)) > radius:
    hi *= 2.0
  for _ in range(100):  # ||b(lam)|| decreases in lam
    mid = 0.5 * (lo + hi)
    lo, hi = (mid, hi) if np.linalg.norm(solve(mid)) > radius else (lo, mid)
  return solve(hi)


def excess_risks(problem: Problem, n: int, *, test_size: int, k_exponent: float, seed: int):
  """(base excess risk, ResMem excess risk, k) for one training set of size n."""
  rng = np.random.default_rng(seed)
  x, y = problem.sample(n, rng)
  x_test, _ = problem.sample(test_size, rng)
  b = constrained_least_squares(x, y, problem.norm_fraction * np.linalg.norm(problem.beta))
  k = max(1, min(n, int(round(n ** k_exponent))))
  memory = memory_lib.fit(x.astype(np.float32), x @ b, y, task='regression', k=k, sigma=None)
  truth = x_test @ problem.beta
  base = x_test @ b
  resmem = memory.predict(x_test.astype(np.float32), base)
  return float(np.mean((base - truth) ** 2)), float(np.mean((resmem - truth) ** 2)), k

"""Distillation in eigenspace: linear regression by gradient descent (numpy, float64).

With X^T X / n = sum_k lambda_k v_k v_k^T and gradient descent from zero on (1/2n)||Xw - y||^2 with
step eta, the coefficient along v_k after T steps is exactly

    a_k^T = (1 - (1 - eta lambda_k)^T) a_k^OLS                                   (the teacher)

and a student fitted by the same descent to the teacher's training predictions X w_T for T' steps
has

    a_k^S = (1 - (1 - eta lambda_k)^T') a_k^T                                    (the student)

so a_k^S / a_k^T is ~1 along the top directions and ~eta lambda_k T' along small ones: a second
spectral filter on top of the teacher's [derived; the card's eigenspace view].

    problem = make_problem(n=200, d=100, decay=1.0, noise=0.5, seed=0)
    view = distil_linear(problem, eta=..., teacher_steps=..., student_steps=...)
    view.ratio, view.test_mse
"""

from __future__ import annotations

import dataclasses

import numpy as np

from distill.loss import DistillError


@dataclasses.dataclass
class LinearProblem:
  x_train: np.ndarray   # (n, d)
  y_train: np.ndarray   # (n,)
  x_test: np.ndarray    # (m, d)
  y_test: np.ndarray    # (m,) noiseless targets x . beta
  beta: np.ndarray      # (d,)
  noise: float


def make_problem(n: int = 200, d: int = 100, *, decay: float = 1.0, noise: float = 0.5,
                 test_size: int = 2000, seed: int = 0) -> LinearProblem:
  """x ~ N(0, Sigma) with Sigma's eigenvalues k^-decay in a random basis; y = x . beta + noise eps,
  beta ~ N(0, I_d / d) so ||beta|| ~ 1. The test targets are noiseless (test MSE = excess risk)."""
  for name, value in (('n', n), ('d', d), ('test_size', test_size)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
      raise DistillError(f'{name} must be a whole number >= 1, got {value!r}.')
  if not noise >= 0 or not np.isfinite(decay):
    raise DistillError(f'noise must be >= 0 and decay finite; got noise={noise}, decay={decay}.')
  rng = np.random.default_rng(seed)
  basis, _ = np.linalg.qr(rng.normal(size=(d, d)))
  scales = np.arange(1, d + 1, dtype=np.float64) ** (-decay / 2)
  draw = lambda m: (rng.normal(size=(m, d)) * scales) @ basis.T
  beta = rng.normal(size=d) / np.sqrt(d)
  x_train, x_test = draw(n), draw(test_size)
  y_train = x_train @ beta + noise * rng.normal(size=n)
  return LinearProblem(x_train=x_train, y_train=y_train, x_test=x_test, y_test=x_test @ beta,
                       beta=beta, noise=float(noise))


def eigendecomposition(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(lambda (d,) descending, V (d, d) columns v_k) of X^T X / n."""
  x = _check_design(x)
  lam, vecs = np.linalg.eigh(x.T @ x / len(x))
  order = np.argsort(lam)[::-1]
  return np.maximum(lam[order], 0.0), vecs[:, order]


def _check_design(x) -> np.ndarray:
  x = np.asarray(x, np.float64)
  if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
    raise DistillError(f'X must be a non-empty (n, d) design matrix; got shape {x.shape}.')
  if not np.all(np.isfinite(x)):
    raise DistillError('X must be finite.')
  return x


def check_step_size(eta: float, lambda_max: float) -> None:
  """Gradient descent converges (and the closed forms hold) for 0 < eta < 2 / lambda_max."""
  if not (np.isfinite(eta) and 0 < eta < 2.0 / lambda_max):
    raise DistillError(f'eta={eta!r} must lie in (0, 2 / lambda_max) = (0, {2 / lambda_max:.4g}) '
                       'for gradient descent to converge.')


def _check_steps(steps, name: str) -> int:
  if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
    raise DistillError(f'{name} must be a whole number >= 0, got {steps!r}.')
  return int(steps)


def gradient_descent(x, y, *, eta: float, steps: int, w0=None) -> np.ndarray:
  """w after `steps` of w <- w - eta X^T (X w - y) / n from w0 (default zero)."""
  x = _check_design(x)
  y = np.asarray(y, np.float64)
  if y.shape != (len(x),):
    raise DistillError(f'y must be ({len(x)},) targets; got shape {y.shape}.')
  steps = _check_steps(steps, 'steps')
  w = np.zeros(x.shape[1]) if w0 is None else np.array(w0, np.float64)
  gram, xty = x.T @ x / len(x), x.T @ y / len(x)   # the gradient is gram w - xty
  for _ in range(steps):
    w = w - eta * (gram @ w - xty)
  return w


def ols(x, y) -> np.ndarray:
  """The minimum-norm least-squares solution (where gradient descent from zero converges)."""
  return np.linalg.lstsq(_check_design(x), np.asarray(y, np.float64), rcond=None)[0]


def spectral_filter(lam: np.ndarray, eta: float, steps: int) -> np.ndarray:
  """1 - (1 - eta lambda_k)^steps: what T steps of gradient descent keep along each v_k."""
  return 1.0 - (1.0 - eta * np.asarray(lam, np.float64)) ** _check_steps(steps, 'steps')


@dataclasses.dataclass
class EigenView:
  lam: np.ndarray               # (d,) eigenvalues of X^T X / n, descending
  a_ols: np.ndarray             # (d,) coefficients along v_k
  a_teacher: np.ndarray         # by gradient descent
  a_student: np.ndarray
  a_teacher_closed: np.ndarray  # the closed forms
  a_student_closed: np.ndarray
  test_mse: dict[str, float]    # teacher, student, ols (against noiseless targets)
  train_mse: dict[str, float]   # against the noisy training labels
  eta: float
  teacher_steps: int
  student_steps: int

  @property
  def ratio(self) -> np.ndarray:
    """a_S / a_T along each v_k (= the student's filter 1 - (1 - eta lambda_k)^T')."""
    with np.errstate(divide='ignore', invalid='ignore'):
      return self.a_student / self.a_teacher

  @property
  def closed_form_error(self) -> float:
    """max |GD - closed form| over both models' coefficients, relative to max |a_OLS|."""
    err = max(np.max(np.abs(self.a_teacher - self.a_teacher_closed)),
              np.max(np.abs(self.a_student - self.a_student_closed)))
    return float(err / max(np.max(np.abs(self.a_ols)), 1e-300))

  def mean_ratio(self, lo: float, hi: float) -> float:
    """Mean a_S / a_T over the directions whose rank fraction is in [lo, hi) (0 = largest)."""
    d = len(self.lam)
    idx = np.arange(int(np.floor(lo * d)), max(int(np.floor(hi * d)), int(np.floor(lo * d)) + 1))
    return float(np.mean(self.ratio[idx]))


def distil_linear(problem: LinearProblem, *, eta: float | None = None, teacher_steps: int,
                  student_steps: int, eta_times_lambda_max: float = 0.5) -> EigenView:
  """Teacher: GD on the labels for teacher_steps; student: GD on the teacher's training
  predictions for student_steps; both from zero with step eta (default eta_times_lambda_max /
  lambda_max); their coefficients in the eigenbasis, the closed forms and test errors."""
  x, y = problem.x_train, problem.y_train
  lam, vecs = eigendecomposition(x)
  eta = float(eta if eta is not None else eta_times_lambda_max / lam[0])
  check_step_size(eta, lam[0])
  w_ols = ols(x, y)
  w_teacher = gradient_descent(x, y, eta=eta, steps=teacher_steps)
  w_student = gradient_descent(x, x @ w_teacher, eta=eta, steps=student_steps)
  a_ols, a_t, a_s = (vecs.T @ w for w in (w_ols, w_teacher, w_student))
  mse = lambda xs, ys, w: float(np.mean((xs @ w - ys) ** 2))
  weights = {'teacher': w_teacher, 'student': w_student, 'ols': w_ols}
  return EigenView(
      lam=lam, a_ols=a_ols, a_teacher=a_t, a_student=a_s,
      a_teacher_closed=spectral_filter(lam, eta, teacher_steps) * a_ols,
      a_student_closed=spectral_filter(lam, eta, student_steps) * a_t,
      test_mse={k: mse(problem.x_test, problem.y_test, w) for k, w in weights.items()},
      train_mse={k: mse(x, y, w) for k, w in weights.items()},
      eta=eta, teacher_steps=int(teacher_steps), student_steps=int(student_steps))

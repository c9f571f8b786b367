"""common.validate: the shared probability-row and 0/1 checks, and the papers' errors built on them."""

import ml_collections
import numpy as np
import pytest

from abstain import checks as abstain_checks
from cascades import deferral
from common import config_lib
from common import validate


def _rows(n=5, c=3, seed=0):
  p = np.random.default_rng(seed).random((n, c)) + 0.1
  return p / p.sum(1, keepdims=True)


def test_good_rows_come_back_as_float64():
  p = _rows().astype(np.float32)
  out = validate.probability_rows(p, 'probs', num_examples=5, num_classes=3)
  assert out.dtype == np.float64 and out.shape == (5, 3)
  np.testing.assert_allclose(out, p)
  one_hot = np.eye(3, dtype=bool)[[0, 2, 1]]  # bool one-hot rows are distributions too
  np.testing.assert_array_equal(validate.probability_rows(one_hot), one_hot.astype(float))
  # Within the tolerance: a float32 softmax's rounding is not an error.
  validate.probability_rows(_rows() * (1 + 5e-4))


@pytest.mark.parametrize('probs,kwargs,match', [
    (np.full(3, 1 / 3), {}, r'p1 must have shape \(examples, classes\).*got \(3,\)'),
    (np.zeros((0, 3)), {}, 'p1 is empty'),
    (_rows(), {'num_examples': 4, 'length_of': 'the labels'},
     r'p1 has 5 examples, expected 4 \(the length of the labels\)'),
    (_rows(), {'num_classes': 4}, 'p1 has 3 classes, expected 4'),
    (np.array([['a', 'b']]), {}, 'p1 must be numeric probabilities, got dtype <U1'),
])
def test_the_wrong_shape_or_kind_is_refused_naming_the_argument(probs, kwargs, match):
  with pytest.raises(validate.InputError, match=match):
    validate.probability_rows(probs, 'p1', **kwargs)


def test_the_first_bad_row_is_named():
  p = _rows(6)
  nan = p.copy()
  nan[2, 1] = np.nan
  nan[4, 0] = np.inf
  with pytest.raises(validate.InputError, match=r'p must be finite; row 2 \(and 1 more\) has NaN'):
    validate.probability_rows(nan, 'p')
  logits = p.copy()
  logits[3] = [2.0, -1.0, 0.5]
  with pytest.raises(validate.InputError, match=r'p must be probabilities in \[0, 1\] '
                     r'\(non-negative, at most one\); row 3 has values in \[-1, 2\].*logits\?'):
    validate.probability_rows(logits, 'p')
  unnormalised = p.copy()
  unnormalised[1] *= 0.5
  unnormalised[5] *= 0.9
  with pytest.raises(validate.InputError, match=r'p rows must sum to one; row 1 \(and 1 more\) '
                     r'sums to 0.5000, more than 0.001 from one'):
    validate.probability_rows(unnormalised, 'p')
  validate.probability_rows(unnormalised, 'p', tolerance=0.6)  # the caller's tolerance


def test_the_error_is_the_callers_class_and_a_value_error():
  class Mine(validate.InputError):
    pass

  with pytest.raises(Mine, match='sums to 0.5000'):
    validate.probability_rows(_rows() / 2, error=Mine)
  assert issubclass(validate.InputError, ValueError)


def test_cascades_and_abstain_use_the_common_check_with_their_own_classes():
  """The two twins of issue 30 are now one check: the same rows refused with the same message,
  each paper's class a common.validate.InputError."""
  bad = _rows()
  bad[2] = [0.7, 0.7, 0.1]
  messages = []
  for check, error in ((deferral.check_probs, deferral.CascadesInputError),
                       (abstain_checks.check_probs, abstain_checks.AbstainInputError)):
    assert issubclass(error, validate.InputError)
    with pytest.raises(error, match='row 2') as info:
      check(bad, 'probs')
    messages.append(str(info.value))
  assert messages[0] == messages[1]
  np.testing.assert_array_equal(deferral.check_probs(_rows()), abstain_checks.check_probs(_rows()))


def test_zero_one_refuses_class_ids_as_flags():
  np.testing.assert_array_equal(validate.zero_one([0, 1, 1.0], 'f'), [False, True, True])
  with pytest.raises(validate.InputError, match=r'f must be 0/1 flags.*\[2\]'):
    validate.zero_one([0, 1, 2], 'f')


def test_config_field_checks_name_the_dotted_field():
  config = ml_collections.ConfigDict({'loop': {'steps': 10, 'rate': 0.1, 'sizes': (4, 8),
                                               'kind': 'adam', 'on': True, 'costs': (0.5,)}})
  assert config_lib.whole(config, 'loop.steps', 1) == 10
  assert config_lib.real(config, 'loop.rate', 0.0, open_low=True) == 0.1
  assert config_lib.whole_tuple(config, 'loop.sizes', 1) == (4, 8)
  assert config_lib.choice(config, 'loop.kind', ('adam', 'sgd')) == 'adam'
  assert config_lib.flag(config, 'loop.on') is True
  assert config_lib.real_tuple(config, 'loop.costs', 0.0, 1.0) == (0.5,)
  error = config_lib.ConfigError
  with pytest.raises(error, match=r'loop.stesp: the config has no such field'):
    config_lib.whole(config, 'loop.stesp', 1)
  with pytest.raises(error, match=r'loop.steps=10: expected a whole number >= 11'):
    config_lib.whole(config, 'loop.steps', 11)
  with pytest.raises(error, match=r'loop.rate=0.1: expected a finite number in \(0.1, 1\]'):
    config_lib.real(config, 'loop.rate', 0.1, 1, open_low=True)
  with pytest.raises(error, match=r"loop.kind='adam' \(did you mean 'adamw'\?\): use one of"):
    config_lib.choice(config, 'loop.kind', ('adamw', 'sgd'))
  with pytest.raises(error, match=r'loop.sizes=\(4, 8\): expected a non-empty sequence of whole '
                     r'numbers >= 5'):
    config_lib.whole_tuple(config, 'loop.sizes', 5)
  with pytest.raises(error, match=r"loop.sizes has 4: use \('a',\)"):
    config_lib.choice_tuple(config, 'loop.sizes', ('a',))
  with pytest.raises(error, match=r'loop.steps=10: expected True or False'):
    config_lib.flag(config, 'loop.steps')
  for bad in (float('nan'), float('inf'), True):
    with pytest.raises(error, match='loop.rate='):
      config_lib.real(ml_collections.ConfigDict({'loop': {'rate': bad}}), 'loop.rate')

"""Depth dependence of muP learning rates in ReLU MLPs (Jelassi et al., arXiv 2305.07810).

    from mup_depth import init, eta_star_exact, linear_coefficient, run_sweep, fit_exponents
    from mup_depth import scale_hidden_by_depth   # the L^(-3/2) rule as an optax transformation
"""

from mup_depth.one_step import ALL_LAYERS
from mup_depth.one_step import HIDDEN_ONLY
from mup_depth.one_step import change_exact
from mup_depth.one_step import eta_star_exact
from mup_depth.one_step import eta_star_linear
from mup_depth.one_step import linear_coefficient
from mup_depth.parameterisation import apply
from mup_depth.parameterisation import init
from mup_depth.parameterisation import preactivations
from mup_depth.rule import depth_multiplier
from mup_depth.rule import depth_scaled_sgd
from mup_depth.rule import scale_hidden_by_depth
from mup_depth.sweep import fit_exponents
from mup_depth.sweep import run_sweep

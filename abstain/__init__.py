"""Plug-in estimators for selective classification with OOD detection (Narasimhan et al.,
arXiv 2301.12386). Numpy arrays of scores and probabilities from any model:

    from abstain import scod, estimators, scores, metrics
    rho = estimators.rho_from_binary(q, outlier_share=0.5)
    slope = scod.tune_slope(m_val, rho_val, is_out_val, correct_val, c_fn=0.75, budget=0.2)
    reject = scod.abstain_at_budget(scod.plugin_score(m, rho, 0.75, slope), budget=0.2)
    scod.scod_risk(reject, is_outlier, correct, c_fn=0.75)
"""

from abstain import checks
from abstain import estimators
from abstain import gaussians
from abstain import metrics
from abstain import scod
from abstain import scores
from abstain.checks import AbstainInputError
from abstain.scod import abstain_at_budget
from abstain.scod import bayes_score
from abstain.scod import plugin_score
from abstain.scod import scod_risk
from abstain.scod import scod_risk_at_budget
from abstain.scod import tune_slope

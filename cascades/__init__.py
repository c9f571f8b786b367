"""When does confidence-based cascade deferral suffice? (Jitkrittum et al., arXiv 2307.02764)

    from cascades import deferral_curve, confidence_score, posthoc
    curve = deferral_curve(confidence_score(p1), p1.argmax(1) == y, p2.argmax(1) == y)
"""

from cascades import posthoc
from cascades.deferral import CONFIDENCE_RULES
from cascades.deferral import CascadesInputError
from cascades.deferral import DeferralCurve
from cascades.deferral import cascade_cost
from cascades.deferral import cascade_predict
from cascades.deferral import choose_thresholds
from cascades.deferral import confidence_score
from cascades.deferral import deferral_curve
from cascades.deferral import entropy_score
from cascades.deferral import margin_score
from cascades.deferral import oracle_score

"""IWeS: importance-weighted subset selection (Citovsky et al., arXiv 2301.12052).

    from iwes import sampling, baselines, methods, selection
    p = sampling.probability('dis', probs_f, probs_g, labels, p_min=0.05)
    draw = sampling.sample_batch(p, 300, rng, available=~selected, w_max=5.0)
    result = selection.run_selection(loop_config, workdir, model_config=..., pool=..., test=...,
                                     runs=[selection.Run(method, seed) ...], seed_size=300,
                                     batch_size=300, budget=2100)
"""

from iwes import baselines
from iwes import checks
from iwes import methods
from iwes import sampling
from iwes import selection
from iwes.checks import IwesInputError
from iwes.methods import Method
from iwes.selection import Run
from iwes.selection import run_selection
from iwes.selection import SelectionStateError

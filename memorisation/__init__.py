"""What do larger image classifiers memorise? (Lukasik et al., arXiv 2310.05337).

    from memorisation import scores, trajectories, proxies, training
    masks = scores.subset_masks(64, N, fraction=0.7, seed=0)       # (K, N), fixed across sizes
    s = scores.memorisation(masks, correct)                        # s.mem, s.cscore, s.se
    classes = trajectories.classify(mem_by_size, trajectories.tolerance(se_by_size))

The distillation study uses distill/'s per-example loss (the one arrow between paper packages).
"""

from memorisation import proxies
from memorisation import scores
from memorisation import trajectories
from memorisation.scores import MemorisationInputError
from memorisation.scores import memorisation as memorisation_scores
from memorisation.scores import influence
from memorisation.scores import subset_masks

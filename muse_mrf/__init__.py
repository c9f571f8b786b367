"""MarkovGen (Jayasumana et al., CVPR 2024): an MRF layer over the image-token grid that replaces
a masked-token model's (Muse, MaskGIT) final decoding steps.

    from muse_mrf import MRFLayer, Sampler, GreyLevelTokenizer, maskgit
"""

from muse_mrf import kernels
from muse_mrf import maskgit
from muse_mrf.kernels import MRFError
from muse_mrf.kernels import mean_field
from muse_mrf.maskgit import DecodingError
from muse_mrf.mrf import MRFLayer
from muse_mrf.sampler import SampleResult
from muse_mrf.sampler import Sampler
from muse_mrf.tokenizers import GreyLevelTokenizer
from muse_mrf.tokenizers import KMeansPatchTokenizer
from muse_mrf.tokenizers import TokenizerError
from muse_mrf.tokenizers import VQAutoencoder
from muse_mrf.tokenizers import VQTokenizer

"""Ten Google Research papers re-implemented in JAX/Flax over one shared platform (common/)."""

import setuptools

# Pinned with ~= to versions checked to install and run together (Python 3.11, CPU).
INSTALL_REQUIRES = [
    'jax~=0.10.2',
    'flax~=0.12.8',
    'optax~=0.2.8',
    'orbax-checkpoint~=0.12.8',
    'chex~=0.1.92',
    'ml-collections~=1.1.0',
    'absl-py~=2.5',
    'numpy~=2.4',
    'tensorflow~=2.21.0',
    'tensorflow-datasets~=4.9.10',
    'tensorboard~=2.21.0',
    'matplotlib~=3.11',
    'scikit-learn~=1.9',
    'mnist1d~=0.0.2',
]

EXTRAS = {
    # seqio (it pulls in tensorflow-text) is in [test] so that the default suite runs the seqio
    # Task test; [text] alone installs it for users of the text pipelines.
    'test': ['pytest~=9.0', 'pytest-xdist~=3.8', 'seqio~=0.0.20', 'tensorflow-text~=2.21.0'],
    'text': ['seqio~=0.0.20', 'tensorflow-text~=2.21.0'],
    # benchmarks/knn.py compares the k-NN kernel with faiss; nothing else imports it.
    'bench': ['faiss-cpu~=1.15'],
}
EXTRAS['all'] = sorted({req for reqs in EXTRAS.values() for req in reqs})

PAPERS = ['memorisation', 'fire_pe', 'pause', 'muse_mrf', 'cascades', 'mup_depth', 'resmem',
          'abstain', 'distill', 'iwes']

setuptools.setup(
    name='gr-papers-jax',
    version='0.1.0',
    description=__doc__,
    python_requires='>=3.11',
    packages=setuptools.find_packages(include=['common', 'common.*', 'configs', 'configs.*']
                                      + [p for paper in PAPERS for p in (paper, paper + '.*')]),
    py_modules=['reproduce'],
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
)

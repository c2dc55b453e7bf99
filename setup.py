"""Installs speechbrain_elbo: diffusion speech enhancement for SpeechBrain."""

import pathlib

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent
VERSION = {}
exec((HERE / "speechbrain_elbo" / "version.py").read_text(), VERSION)

setup(
    name="speechbrain_elbo",
    version=VERSION["__version__"],
    description=(
        "Diffusion-based speech enhancement and dereverberation for "
        "SpeechBrain, with ELBO-aware losses and a two-stage pipeline"
    ),
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    # Ranges the code supports; the lower bounds are the versions
    # tools/check_lower_bounds.sh installs and tests. The exact versions of
    # `make test` and `make demo` are in constraints.txt.
    python_requires=">=3.11",
    packages=find_packages(include=["speechbrain_elbo", "speechbrain_elbo.*"]),
    include_package_data=True,
    package_data={"speechbrain_elbo": ["pretrained/*/*", "minidata/samples/*"]},
    install_requires=[
        "torch>=2.9.1",
        "torchaudio>=2.9.1",
        "speechbrain>=1.1.0,<2",
        "hyperpyyaml",
        "matplotlib",
        "pesq",
        "pyroomacoustics",
        "pystoi",
        "sentencepiece",
        "soundfile",
    ],
    extras_require={
        # the ONNX Runtime backend (speechbrain_elbo.onnx_backend): export
        # with torch.onnx (onnx, onnxscript), run with onnxruntime (use
        # onnxruntime-gpu instead for its CUDA execution provider)
        "onnx": ["onnxruntime>=1.32", "onnx>=1.23", "onnxscript>=0.7"],
        # playwright drives Debian's chromium (tools/install_browser.sh) in
        # the test of the demo's report.html; its browsers are not needed;
        # the onnx packages let `make test` test the ONNX Runtime backend
        "dev": [
            "pytest==9.2.0",
            "ruff==0.17.6",
            "playwright==1.65.2",
            "onnxruntime==1.32.0",
            "onnx==1.23.2",
            "onnxscript==0.7.2",
        ],
    },
    entry_points={
        "console_scripts": [
            "speechbrain-elbo-enhance=speechbrain_elbo.cli:main",
            "speechbrain-elbo-import=speechbrain_elbo.interop.sgmse:main",
        ]
    },
)

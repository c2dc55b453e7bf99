"""Fixtures shared by the tests of the inference area.

None of them is autouse: a test module asks for what it needs, e.g. with
``pytestmark = pytest.mark.usefixtures("one_thread")``.
"""

import importlib.util
import pathlib

import pytest
import torch

from speechbrain_elbo.export import export_enhancer, module_from_yaml
from speechbrain_elbo.minidata.acoustics import RoomConfig
from speechbrain_elbo.minidata.builders import build_miniwhamr
from speechbrain_elbo.minidata.clips import DEFAULT_SAMPLES, load_fixtures
from speechbrain_elbo.sampling import Sampler
from speechbrain_elbo.sde import OUVESDE, GeometricGNS
from speechbrain_elbo.spectral import SpectralTransform

ROOT = pathlib.Path(__file__).resolve().parents[1]
MODELS = ROOT / "hparams" / "models"


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for the module's tests, restored afterwards.

    Two threads on two shared cores are several times slower than one.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _lobe(name, key, seed=None):
    module = module_from_yaml(MODELS / f"{name}.yaml", key)
    if seed is not None:
        # random non-zero weights everywhere (the last layers start at zero)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for param in module.parameters():
                noise = torch.randn(param.shape, generator=generator)
                param.add_(0.05 * noise)
    return module


@pytest.fixture(scope="session")
def lobe():
    """``lobe(name, key, seed=None)``: module ``key`` of
    ``hparams/models/<name>.yaml``, with its ``config``; with a seed, every
    weight gets N(0, 0.05^2) noise from that seed."""
    return _lobe


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Exported folders of the tiny network with random non-zero weights.

    Returns (stage 1 alone, stage 1 + tiny refiner); both share the stage-1
    weights, the SDE and a 2-step PC default sampler.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        root = tmp_path_factory.mktemp("models")
        backbone = _lobe("tiny", "score_model", seed=1)
        refiner = _lobe("refiner_tiny", "refiner", seed=2)
        sde = OUVESDE(GeometricGNS(0.05, 0.5), gamma=1.5, t_eps=0.03)
        parts = (backbone, sde, SpectralTransform(), Sampler("pc", 2))
        one = export_enhancer(root / "stage1", *parts)
        two = export_enhancer(root / "stage2", *parts, refiner=refiner)
    finally:
        torch.set_num_threads(threads)
    return one, two


@pytest.fixture(scope="session")
def imported_sgmse(tmp_path_factory):
    """The committed small sgmse checkpoint (tests/fixtures/sgmse, written
    by sgmse 0.1.2's own classes), imported with ``import_sgmse`` and a
    2-step predictor-corrector default: a stage 1 the recipes did not
    train."""
    from speechbrain_elbo.interop.sgmse import import_sgmse

    checkpoint = pathlib.Path(__file__).parent / "fixtures" / "sgmse"
    out = tmp_path_factory.mktemp("imported") / "sgmse_ncsnpp"
    import_sgmse(checkpoint / "ncsnpp_small.ckpt", out, steps=2)
    return out


def _script(relative):
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def script():
    """``script("bench/inference.py")``: a script of the repository
    (``bench/``, ``tools/``), which is not a package, imported as a module."""
    return _script


@pytest.fixture(scope="session")
def tiny_miniwhamr(tmp_path_factory):
    """A MiniWHAMR folder built from the bundled speech samples: 3 s of
    training speech, 2 validation and 3 test items, rooms of RT60 0.2-0.5 s.
    """
    data = tmp_path_factory.mktemp("miniwhamr") / "miniwhamr"
    build_miniwhamr(
        data,
        load_fixtures(DEFAULT_SAMPLES, segment_seconds=1.0),
        seed=7,
        room_config=RoomConfig(rt60_range=(0.2, 0.5)),
        progress=False,
        train_minutes=0.05,
        valid_items=2,
        test_items=3,
    )
    return data

"""The README's quick start runs as written."""

import pathlib
import re

import torch

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_quick_start_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 2
    namespace = {}
    exec(blocks[0], namespace)
    assert namespace["nfe"] == 60
    assert namespace["enhanced"].shape == (1, 32640)
    namespace["x0"] = 0.8 * namespace["y"]
    exec(blocks[1], namespace)
    assert torch.isfinite(namespace["terms"].total).all()
    assert namespace["curve"]["ioc"].shape == (8,)

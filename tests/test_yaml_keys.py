"""Every key of every hparams YAML file in the repository is used.

In the spirit of SpeechBrain's ``tests/utils/check_yaml.py``:

- a top-level key of a recipe's main YAML (``recipes/*/hparams/*.yaml``) is
  used when another entry of the file refers to it (``<key>``), when Python
  code reads it (``hparams["key"]``, ``hparams.key``, ``"key"`` in a
  Brain's list of required hparams), or when it is a SpeechBrain run option;
- a key of a preset included by the recipes (``hparams/models/*.yaml``,
  ``hparams/gns/*.yaml``) is used when the file itself refers to it or a
  recipe reads it through its include key (``<model[score_model]>``);
- an overrides file (``recipes/*/hparams/overrides/<config>_<stage>.yaml``)
  only overrides keys that ``hparams/<stage>.yaml`` has;
- every recipe YAML loads, with each of its overrides files.
"""

import pathlib
import re

import pytest
import ruamel.yaml
import speechbrain as sb

ROOT = pathlib.Path(__file__).resolve().parents[1]
RECIPE_YAMLS = sorted(ROOT.glob("recipes/*/hparams/*.yaml"))
OVERRIDE_YAMLS = sorted(ROOT.glob("recipes/*/hparams/overrides/*.yaml"))
PRESET_YAMLS = sorted(ROOT.glob("hparams/**/*.yaml"))
CODE_FILES = sorted(ROOT.glob("speechbrain_elbo/**/*.py")) + sorted(
    ROOT.glob("recipes/**/*.py")
)
RUN_OPTIONS = set(sb.RunOptions().as_dict())


def _keys(path):
    yaml = ruamel.yaml.YAML()
    with open(path, encoding="utf-8") as handle:
        tree = yaml.load(handle) or {}
    return [key for key in tree if not str(key).startswith("__")]


def _refers(text, key):
    """``<key>``, ``<key[...]>`` or ``<...[key]>`` in a YAML text."""
    key = re.escape(key)
    return bool(re.search(rf"<{key}(\[|>)|\[{key}\]>", text))


def _code_reads(text, key):
    key = re.escape(key)
    patterns = (
        rf"hparams\[[\"']{key}[\"']\]",
        rf"hparams\.{key}\b",
        rf"hparams\.get\([\"']{key}[\"']",
        rf"hparams, [\"']{key}[\"']",
        rf"^\s*[\"']{key}[\"'],?\s*$",  # an entry of a `_required` tuple
    )
    return any(re.search(p, text, flags=re.MULTILINE) for p in patterns)


CODE = "\n".join(path.read_text(encoding="utf-8") for path in CODE_FILES)
RECIPE_TEXT = "\n".join(p.read_text(encoding="utf-8") for p in RECIPE_YAMLS)


def test_files_were_found():
    assert RECIPE_YAMLS, "no recipe YAML found"
    names = {p.name for p in PRESET_YAMLS}
    assert {"tiny.yaml", "ncsnpp.yaml", "sgmse.yaml"} <= names


@pytest.mark.parametrize(
    "path", RECIPE_YAMLS, ids=lambda p: str(p.relative_to(ROOT))
)
def test_recipe_keys_are_used(path):
    text = path.read_text(encoding="utf-8")
    scripts = "\n".join(
        p.read_text(encoding="utf-8") for p in path.parents[1].glob("*.py")
    )
    unused = [
        key
        for key in _keys(path)
        if not (
            _refers(text, key)
            or _code_reads(CODE + scripts, key)
            or key in RUN_OPTIONS
        )
    ]
    assert not unused, f"{path.name}: keys never used: {unused}"


@pytest.mark.parametrize(
    "path", PRESET_YAMLS, ids=lambda p: str(p.relative_to(ROOT))
)
def test_preset_keys_are_used(path):
    text = path.read_text(encoding="utf-8")
    unused = [
        key
        for key in _keys(path)
        if not (_refers(text, key) or re.search(rf"\[{key}\]>", RECIPE_TEXT))
    ]
    assert not unused, f"{path.name}: keys never used: {unused}"


def test_every_model_preset_builds_one_network():
    for path in ROOT.glob("hparams/models/*.yaml"):
        products = {"score_model", "refiner"} & set(_keys(path))
        assert len(products) == 1, f"{path.name} defines {products}"


@pytest.mark.parametrize(
    "path", OVERRIDE_YAMLS, ids=lambda p: str(p.relative_to(ROOT))
)
def test_overrides_match_their_stage(path):
    stage = path.stem.split("_", 1)[-1]
    main = path.parents[1] / f"{stage}.yaml"
    assert main.is_file(), (
        f"{path.name} should be named <config>_<stage>.yaml with "
        f"hparams/<stage>.yaml present"
    )
    extra = sorted(set(_keys(path)) - set(_keys(main)))
    assert not extra, (
        f"{path.name} overrides keys absent from {main.name}: {extra}"
    )


def _placeholders(path):
    values = {"data_folder": "/nonexistent", "stage1_folder": "/nonexistent"}
    keys = set(_keys(path))
    return "\n".join(f"{k}: {v}" for k, v in values.items() if k in keys)


@pytest.mark.parametrize(
    "path", OVERRIDE_YAMLS, ids=lambda p: str(p.relative_to(ROOT))
)
def test_recipe_yaml_loads_with_overrides(path, tmp_path):
    from hyperpyyaml import load_hyperpyyaml

    from speechbrain_elbo.recipe import parse_arguments

    stage = path.stem.split("_", 1)[-1]
    main = path.parents[1] / f"{stage}.yaml"
    _, _, overrides = parse_arguments(
        [
            str(main),
            "--overrides_file",
            str(path),
            f"--output_folder={tmp_path}",
        ]
    )
    overrides += _placeholders(main)
    with open(main, encoding="utf-8") as handle:
        hparams = load_hyperpyyaml(handle, overrides)
    assert hparams["output_folder"] == str(tmp_path)
    assert "modules" in hparams and hparams["checkpointer"] is not None

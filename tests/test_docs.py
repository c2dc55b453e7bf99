"""Every Python and shell block of README.md and docs/*.md runs as written.

A block that cannot run here is marked, visibly, by the line just above its
fence: ``*Not run by the tests: <reason>.*`` (a GPU, a corpus, a network
download, hours of computing). Blocks without a language (layouts, printed
output) and data blocks (``json``) are not code and are not run.

The blocks of one document run in order, as a reader would type them: the
Python blocks share one namespace, and every block runs in a workspace that
looks like the repository root (``.venv``, ``tools/``, ``bench/``,
``recipes/``... are links) but whose ``results/`` and other new files are
temporary. Shell blocks run with ``bash -euo pipefail`` and this test's
Python environment first on ``PATH`` (``python``, ``speechbrain-elbo-*``).
"""

import dataclasses
import os
import pathlib
import re
import subprocess
import sys

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CODE = {"python": "python", "py": "python", "bash": "bash", "sh": "bash"}
NOT_CODE = {"", "json", "text", "yaml", "csv"}
MARKER = re.compile(r"^\*Not run by the tests: (?P<reason>.+?)\.?\*$")
FENCE = re.compile(r"^```(?P<language>[\w+-]*)\s*$")
LINKED = (
    "setup.py",
    "constraints.txt",
    "Makefile",
    "speechbrain_elbo",
    "recipes",
    "hparams",
    "tools",
    "bench",
    "tests",
    "docs",
    "README.md",
)
BASH_TIMEOUT_S = 600


@dataclasses.dataclass
class Block:
    """One fenced block of a document."""

    document: pathlib.Path
    line: int  # 1-based line of the opening fence
    language: str
    code: str
    skip_reason: str = None

    @property
    def where(self):
        return f"{self.document.relative_to(ROOT)}:{self.line}"


def blocks_of(document):
    """The fenced blocks of a markdown file, with their markers.

    Example
    -------
    >>> blocks = blocks_of(ROOT / "README.md")
    >>> any(block.language == "python" for block in blocks)
    True
    """
    lines = document.read_text(encoding="utf-8").splitlines()
    blocks, k = [], 0
    while k < len(lines):
        match = FENCE.match(lines[k])
        if not match:
            k += 1
            continue
        start, language = k, match["language"].lower()
        k += 1
        body = []
        while k < len(lines) and not lines[k].startswith("```"):
            body.append(lines[k])
            k += 1
        if k == len(lines):
            raise AssertionError(f"{document}:{start + 1}: unclosed fence")
        k += 1
        marker = MARKER.match(paragraph_above(lines, start))
        blocks.append(
            Block(
                document,
                start + 1,
                language,
                "\n".join(body) + "\n",
                marker and marker["reason"],
            )
        )
    return blocks


def paragraph_above(lines, start):
    """The non-blank lines just above line ``start``, joined by spaces."""
    k = start
    while k > 0 and lines[k - 1].strip() and not FENCE.match(lines[k - 1]):
        k -= 1
    return " ".join(line.strip() for line in lines[k:start])


def runnable(document):
    return [
        block
        for block in blocks_of(document)
        if block.language in CODE and block.skip_reason is None
    ]


def test_every_block_is_code_that_runs_or_is_marked():
    unknown, marked_not_code = [], []
    for document in DOCUMENTS:
        for block in blocks_of(document):
            if block.language not in CODE and block.language not in NOT_CODE:
                unknown.append(f"{block.where} ({block.language})")
            if block.language in NOT_CODE and block.skip_reason:
                marked_not_code.append(block.where)
    assert not unknown, f"blocks of an unknown language: {unknown}"
    assert not marked_not_code, (
        f"markers above blocks that are not code (nothing to skip): "
        f"{marked_not_code}"
    )


def test_markers_give_a_reason():
    reasons = [
        (block.where, block.skip_reason)
        for document in DOCUMENTS
        for block in blocks_of(document)
        if block.skip_reason is not None
    ]
    short = [where for where, reason in reasons if len(reason.split()) < 3]
    assert not short, f"a marker needs a reason of a few words: {short}"


def test_the_parser_sees_markers_and_languages(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "text\n\n```python\nx = 1\n```\n"
        "*Not run by the tests: needs a GPU to train.*\n```bash\nmake\n```\n"
        "```\nlayout\n```\n",
        encoding="utf-8",
    )
    blocks = blocks_of(page)
    assert [(b.language, b.line) for b in blocks] == [
        ("python", 3),
        ("bash", 7),
        ("", 10),
    ]
    assert blocks[0].skip_reason is None
    assert blocks[1].skip_reason == "needs a GPU to train"
    page.write_text("```python\nx = 1\n", encoding="utf-8")
    with pytest.raises(AssertionError, match="unclosed fence"):
        blocks_of(page)


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A folder that looks like the repository root, with a fresh
    ``results/``, as the current directory."""
    for name in LINKED:
        (tmp_path / name).symlink_to(ROOT / name)
    (tmp_path / ".venv").symlink_to(pathlib.Path(sys.prefix))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_bash(block, cwd):
    env = dict(os.environ)
    env["PATH"] = f"{pathlib.Path(sys.executable).parent}:{env['PATH']}"
    env.setdefault("OMP_NUM_THREADS", "1")
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block.code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=BASH_TIMEOUT_S,
    )
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-3000:]
        raise AssertionError(
            f"{block.where}: the shell block exited with "
            f"{done.returncode}:\n{tail}"
        )
    return done.stdout


def run_document(document, cwd):
    """Run the runnable blocks of ``document`` in order; returns the
    namespace of its Python blocks and the output of its shell blocks."""
    namespace = {"__name__": "__docs__"}
    outputs = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for block in runnable(document):
            if CODE[block.language] == "python":
                code = compile(block.code, block.where, "exec")
                exec(code, namespace)  # noqa: S102 (the docs' own code)
            else:
                outputs.append(run_bash(block, cwd))
    finally:
        torch.set_num_threads(threads)
    return namespace, outputs


DOCUMENTS_WITH_CODE = [d for d in DOCUMENTS if runnable(d)]


@pytest.mark.parametrize(
    "document",
    DOCUMENTS_WITH_CODE,
    ids=[str(d.relative_to(ROOT)) for d in DOCUMENTS_WITH_CODE],
)
def test_document_runs(document, workspace):
    namespace, _ = run_document(document, workspace)
    check = CHECKS.get(document.name)
    if check is not None:
        check(namespace, workspace)


def check_readme(namespace, workspace):
    assert namespace["nfe"] == 60
    assert namespace["enhanced"].shape == (1, 32640)
    assert torch.isfinite(namespace["terms"].total).all()
    assert namespace["curve"]["ioc"].shape == (8,)


CHECKS = {"README.md": check_readme}

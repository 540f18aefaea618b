"""The layout rules of docs/DESIGN.md that import contracts cannot express:
every uid or gid change is in one module, no module grows past the size a
reader can hold, and no document names a file the repository lacks.  Pure
reads of the checkout; the contracts themselves run as `lint-imports` in
`make test`."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CODE = sorted([*REPO.glob("privsep/**/*.py"), *REPO.glob("privsep_tree/**/*.py")])
#: Calls that change a process's uids, gids or groups.
ID_CHANGES = {"setuid", "seteuid", "setreuid", "setresuid", "setgid", "setegid", "setregid",
              "setresgid", "setgroups", "initgroups"}
UID_MODULE = REPO / "privsep/common/ids.py"
MAX_LINES = 700


def _id_changes(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    return [f"{path.relative_to(REPO)}:{node.lineno} {node.func.attr}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr in ID_CHANGES]


def test_the_layout_is_there() -> None:
    packages = {p.parent.name for p in REPO.glob("privsep/*/__init__.py")}
    assert packages == {"listener", "monitor", "netchild", "session", "shell", "signer", "child",
                        "common", "config", "wire"}
    assert (REPO / "privsep_tree/__init__.py").exists()


def test_uid_and_gid_changes_live_in_one_module() -> None:
    assert _id_changes(UID_MODULE), "ids.py changes no id: the check below would prove nothing"
    elsewhere = [hit for path in CODE if path != UID_MODULE for hit in _id_changes(path)]
    assert elsewhere == []


@pytest.mark.parametrize("path", CODE, ids=lambda p: str(p.relative_to(REPO)))
def test_no_module_is_too_long(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= MAX_LINES


def _named_files(text: str) -> set[str]:
    """Repository paths a document names: files under privsep/, tests/, docs/
    … (with an extension) and folders (with a trailing slash)."""
    pattern = r"(?<![\w/.-])((?:privsep|privsep_tree|tests|docs|systemd|pam\.d|\.ci)/[\w./-]*)"
    named = {m.rstrip(".") for m in re.findall(pattern, text)}
    return {p for p in named if p.endswith("/") or "." in p.rsplit("/", 1)[-1]}


@pytest.mark.parametrize("doc", ["README.md", "docs/DESIGN.md"])
def test_documents_name_only_files_that_exist(doc: str) -> None:
    text = (REPO / doc).read_text()
    named = _named_files(text)
    assert named, f"{doc} names no file at all: the check would prove nothing"
    missing = sorted(p for p in named if not (REPO / p).exists())
    assert missing == []

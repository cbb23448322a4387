"""The README's layout table ("What is here") names every module of the package, and every path
it names exists."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _layout_rows() -> list:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    section = text.split("## What is here", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| `")]


def _named_paths() -> set:
    paths = set()
    for row in _layout_rows():
        first_cell = row.split(" | ", 1)[0]
        paths.update(re.findall(r"`([^`]+)`", first_cell))
    return paths


def test_every_named_path_exists():
    named = _named_paths()
    assert named, "no layout table found in README.md"
    missing = sorted(p for p in named if not os.path.exists(os.path.join(ROOT, p.rstrip("/"))))
    assert missing == [], f"README layout table names paths that do not exist: {missing}"


def test_every_module_of_the_package_is_named():
    named = {p.rstrip("/") for p in _named_paths()}
    pkg = os.path.join(ROOT, "projcomp")
    unnamed = []
    for entry in sorted(os.listdir(pkg)):
        full = os.path.join(pkg, entry)
        is_module = entry.endswith(".py") and entry != "__init__.py"
        is_package = os.path.isfile(os.path.join(full, "__init__.py"))
        if (is_module or is_package) and f"projcomp/{entry}" not in named:
            unnamed.append(f"projcomp/{entry}")
    assert unnamed == [], f"README layout table does not name: {unnamed}"

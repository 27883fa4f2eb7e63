"""The tree keeps the shape docs/architecture.md describes.

- The README's "Layout" table names every module of every package, and nothing that is not there.
- Imports follow the stages: a `ranker/` stage imports only itself and the stages below it, and
  `ranker/` never imports `labeling/`.
- No module imports another module's private (`_name`) helpers.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ranker", "labeling")
# Bottom to top; a stage may import from itself and from the stages before it.
STAGES = ["core", "tasks", "capture", "evaluation", "rankers", "reward", "serving", "experiments"]
TOP_LEVEL = len(STAGES)  # ranker/cli.py, ranker/__main__.py, ranker/__init__.py


def package_dirs() -> list[Path]:
    return sorted({path.parent for package in PACKAGES for path in (ROOT / package).rglob("*.py")})


def modules_in(folder: Path) -> set[str]:
    return {path.name for path in folder.glob("*.py") if path.name not in ("__init__.py", "__main__.py")}


def layout_rows() -> dict[str, set[str]]:
    """README layout rows: first cell a `folder/`, second cell its modules in backticks."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and re.fullmatch(r"`[\w/.]+/`", cells[0]):
            rows[cells[0].strip("`")] = set(re.findall(r"`([\w.]+\.py)`", cells[1]))
    return rows


def test_the_readme_layout_table_lists_every_module_of_every_package():
    rows = layout_rows()
    folders = {f"{folder.relative_to(ROOT).as_posix()}/": modules_in(folder) for folder in package_dirs()}
    folders = {name: modules for name, modules in folders.items() if modules}
    folders["bench/"] = modules_in(ROOT / "bench")
    missing = sorted(set(folders) - set(rows))
    assert not missing, f"README layout table has no row for {missing}"
    for name, modules in rows.items():
        if modules or name in folders:  # a row that lists modules must be a real folder, listing all of them
            assert rows[name] == folders.get(name), (
                f"README layout row {name}: lists {sorted(modules)}, the tree has {sorted(folders.get(name) or [])}")


def stage_of(module: str) -> int | None:
    """Stage index of a `ranker.*` module name; None for anything outside `ranker`."""
    parts = module.split(".")
    if parts[0] != "ranker":
        return None
    if parts == ["ranker"]:
        return -1  # ranker/__init__.py: the version only, imports nothing
    if len(parts) > 1 and parts[1] in STAGES:
        return STAGES.index(parts[1])
    return TOP_LEVEL


def imports_of(path: Path) -> list[tuple[str, list[str], int]]:
    """(module, imported names, line) for every absolute import in the file, nested ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [alias.name for alias in node.names], node.lineno))
    return found


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def library_files() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py")) + [ROOT / "app.py"]


def test_ranker_stages_import_only_themselves_and_the_stages_below():
    assert not imports_of(ROOT / "ranker" / "__init__.py")  # so every stage may read ranker.__version__
    wrong = []
    for path in (ROOT / "ranker").rglob("*.py"):
        own = stage_of(module_name(path))
        for module, _, line in imports_of(path):
            if module.split(".")[0] == "labeling":
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {module} (ranker/ never imports labeling/)")
            target = stage_of(module)
            if target is not None and target > own:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {module}, a later stage")
    assert not wrong, "\n".join(wrong)


def test_no_module_imports_another_modules_private_names():
    wrong = []
    for path in library_files():
        for module, names, line in imports_of(path):
            if module.split(".")[0] in PACKAGES and module != module_name(path):
                private = [name for name in names if name.startswith("_") and not name.startswith("__")]
                wrong += [f"{path.relative_to(ROOT)}:{line} imports {module}.{name}" for name in private]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("module, expected", [("ranker.core.file_io", 0), ("ranker.rankers.estimator", 4),
                                              ("ranker.cli", TOP_LEVEL), ("ranker", -1), ("labeling.service", None), ("torch", None)])
def test_stage_of_reads_the_package_path(module, expected):
    assert stage_of(module) == expected

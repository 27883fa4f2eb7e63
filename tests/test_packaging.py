"""The package installs, and its requirement lists agree: pyproject.toml, requirements.txt (Spaces), the README's sdk_version."""

import ast
import re
import subprocess
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import tomllib
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
SELF = "language-ranker"


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(lines) -> dict[str, Requirement]:
    """{normalised name: requirement}, skipping references to this package's own extras."""
    parsed = [Requirement(line) for line in lines]
    return {normalise(r.name): r for r in parsed if normalise(r.name) != SELF}


CPU_TORCH_INDEX = "--extra-index-url https://download.pytorch.org/whl/cpu"


def requirement_file_lines(text: str) -> list[str]:
    """The non-blank lines of a requirements file, without comments."""
    return [line.split("#")[0].strip() for line in text.splitlines() if line.split("#")[0].strip()]


def spaces_requirements() -> list[str]:
    """requirements.txt's requirements, without its option lines (checked on their own below)."""
    return [line for line in requirement_file_lines((ROOT / "requirements.txt").read_text()) if not line.startswith("-")]


def test_requirements_txt_takes_torch_from_the_cpu_index_and_has_no_other_option():
    lines = requirement_file_lines((ROOT / "requirements.txt").read_text())
    assert [line for line in lines if line.startswith("-")] == [CPU_TORCH_INDEX]
    assert lines.index(CPU_TORCH_INDEX) < lines.index("torch==2.13.0")  # the index is named before the pin it serves


def test_setup_sh_installs_requirements_txt_without_the_index_line():
    """Only package registries are reachable where setup.sh runs, so it must not hand pip the PyTorch index."""
    printed = subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh"), "--print-requirements"], cwd="/",
                             capture_output=True, text=True, timeout=60, check=True).stdout
    original = (ROOT / "requirements.txt").read_text().splitlines()
    assert printed.splitlines() == [line for line in original if line.strip() != CPU_TORCH_INDEX]
    assert len(printed.splitlines()) == len(original) - 1
    script = (ROOT / "scripts" / "setup.sh").read_text()
    assert "-r requirements.txt" not in script and 'pip_install -r "$requirements"' in script


def test_requirements_txt_is_the_core_app_and_reward_requirements_exactly():
    extras = PROJECT["optional-dependencies"]
    declared = requirements(PROJECT["dependencies"] + extras["app"] + extras["reward"])
    listed = requirements(spaces_requirements())
    assert {name: str(r) for name, r in listed.items()} == {name: str(r) for name, r in declared.items()}
    assert all(len(r.specifier) == 1 and next(iter(r.specifier)).operator == "==" for r in listed.values())  # all pinned


def test_the_readme_sdk_version_is_the_pinned_gradio():
    gradio = requirements(PROJECT["optional-dependencies"]["app"])["gradio"]
    front_matter = (ROOT / "README.md").read_text().split("---")[1]
    sdk_version = re.search(r"^sdk_version: (\S+)$", front_matter, re.M).group(1)
    assert str(gradio.specifier) == f"=={sdk_version}" and "oauth" in gradio.extras


def imported_top_level_modules(paths) -> set[str]:
    modules = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return modules


def test_every_imported_package_is_declared():
    declared = set(requirements(PROJECT["dependencies"] + [r for extra in PROJECT["optional-dependencies"].values()
                                                             for r in extra]))
    distributions = packages_distributions()
    imported = imported_top_level_modules([*(ROOT / "ranker").rglob("*.py"), *(ROOT / "labeling").rglob("*.py"), ROOT / "app.py"])
    third_party = {m for m in imported if m not in sys.stdlib_module_names and m not in ("ranker", "labeling", "spaces")}
    undeclared = {}
    for module in sorted(third_party):
        names = {normalise(d) for d in distributions.get(module, [module])}
        if not names & declared:
            undeclared[module] = sorted(names)
    assert undeclared == {}, f"imported but not declared in pyproject.toml: {undeclared}"
    assert {"huggingface-hub", "numpy", "pyarrow", "tqdm", "kaleido"} <= declared


def test_pip_install_gives_the_libraries_and_the_command(tmp_path):
    """`pip install .` into a fresh venv, then `language-ranker --help` and every module imports from the installed copy.

    The venv reaches the already installed dependencies through a .pth file (this machine has no
    network for a full install), and the package itself goes in with `--no-deps`.
    """
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          check=True, capture_output=True, text=True, timeout=60).stdout.strip()
    deps = subprocess.run([sys.executable, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          check=True, capture_output=True, text=True, timeout=60).stdout.strip()
    Path(site, "dependencies.pth").write_text(deps + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                    "--no-build-isolation", "--disable-pip-version-check", str(ROOT)], check=True, timeout=300,
                   capture_output=True)
    env = {"PATH": "/usr/bin:/bin", "GRADIO_ANALYTICS_ENABLED": "False", "HOME": str(tmp_path)}
    every_module = ("import importlib, pkgutil, ranker, labeling\n"
                    "names = [m.name for p in (ranker, labeling) for m in pkgutil.walk_packages(p.__path__, p.__name__ + '.')]\n"
                    "[importlib.import_module(n) for n in names if not n.endswith('__main__')]\n"
                    "print(ranker.__file__, labeling.__file__, len(names))")
    imported = subprocess.run([str(python), "-c", every_module], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=300)
    assert imported.returncode == 0, imported.stderr[-2000:]
    ranker_file, labeling_file, count = imported.stdout.split()
    assert ranker_file.startswith(site) and labeling_file.startswith(site)  # the installed copy, not the repo
    in_repo = [path for package in ("ranker", "labeling") for path in (ROOT / package).rglob("*.py")
               if path.name not in ("__init__.py", "__main__.py")]
    assert int(count) >= len(in_repo)  # every module of every sub-package was installed (and imported)
    assert Path(site, "ranker", "tasks", "data", "countries.csv").is_file()  # package data travels
    command = subprocess.run([str(venv / "bin" / SELF), "--help"], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=120)
    assert command.returncode == 0, command.stderr[-2000:]
    assert command.stdout.startswith(f"usage: {SELF} ")
    for verb in ("build", "train", "train-rm", "eval", "experiment", "plots", "report"):
        assert verb in command.stdout

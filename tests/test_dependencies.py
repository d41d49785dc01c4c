"""pyproject.toml and environment.yml must describe the same environment."""
import re
from pathlib import Path

import yaml

try:
    import tomllib
except ImportError:  # Python 3.10: pytest brings tomli
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
CONDA_TO_PIP = {"pytorch": "torch", "playwright-python": "playwright"}  # conda-forge names that differ from PyPI's
CONDA_ONLY = {"python", "pip"}


def _split(requirement: str) -> tuple[str, str]:
    match = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*(.*?)\s*", requirement)
    assert match, f"cannot read requirement {requirement!r}"
    return match.group(1).lower().replace("_", "-"), match.group(2).replace(" ", "")


def pip_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + project["optional-dependencies"]["test"]
    return dict(_split(r) for r in reqs)


def conda_requirements() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    found = {}
    for item in env["dependencies"]:
        if isinstance(item, dict):  # the pip: section installs the course itself
            assert item == {"pip": ["-e ."]}, f"unexpected pip section {item}"
            continue
        name, spec = _split(item.replace("=", "==", 1) if re.fullmatch(r"[\w\-]+=[\d.]+", item) else item)
        if name in CONDA_ONLY:
            continue
        found[CONDA_TO_PIP.get(name, name)] = spec
    return found


def test_environment_yml_matches_pyproject():
    pip, conda = pip_requirements(), conda_requirements()
    assert sorted(pip) == sorted(conda), (
        f"only in pyproject.toml: {sorted(set(pip) - set(conda))}; "
        f"only in environment.yml: {sorted(set(conda) - set(pip))}")
    for name in pip:
        assert pip[name] == conda[name], f"{name}: pyproject says {pip[name]!r}, environment.yml says {conda[name]!r}"


def test_conda_python_satisfies_requires_python():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    minimum = project["requires-python"].removeprefix(">=")
    version = python.split("=")[1]
    assert tuple(map(int, version.split("."))) >= tuple(map(int, minimum.split(".")))


def test_core_course_dependencies_are_declared():
    for name in ("jupyterlab", "numpy", "torch", "matplotlib", "ipywidgets", "nbval", "pytest"):
        assert name in pip_requirements()

"""The documentation site: its tutorials run as written and its navigation lists every page.

The strict build itself (`bash .ci/docs`, run by `.ci/run`) needs the docs tools, which live in
their own venv; these checks need only the test environment.
"""

import os
import pathlib
import re
import subprocess
import sys

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
TUTORIALS = sorted((DOCS / "tutorials").glob("*.md"))


def _nav_pages(entries) -> list[str]:
    """Every page path of a mkdocs ``nav`` (nested lists of ``{title: page or list}``)."""
    pages = []
    for entry in entries:
        values = entry.values() if isinstance(entry, dict) else [entry]
        for value in values:
            pages += _nav_pages(value) if isinstance(value, list) else [value]
    return pages


def _nav() -> list[str]:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    return _nav_pages(config["nav"])


def test_nav_lists_every_page_and_only_pages_that_exist():
    nav = _nav()
    # the analysis' generated summaries (docs/results/<experiment>/) are linked, not in the nav
    pages = {
        p.relative_to(DOCS).as_posix()
        for p in DOCS.rglob("*.md")
        if not p.relative_to(DOCS).as_posix().startswith("results/")
    }
    assert sorted(pages - set(nav)) == [], "pages missing from mkdocs.yml's nav"
    assert sorted(set(nav) - pages) == [], "mkdocs.yml's nav names pages that do not exist"
    assert len(nav) == len(set(nav)), "a page appears twice in the nav"


def test_api_reference_covers_every_package_namespace():
    """One API page per namespace that exports names (``__all__``)."""
    namespaces = {
        p.parent.name
        for p in (ROOT / "torchrl_o3f").glob("*/__init__.py")
        if "__all__" in p.read_text()
    }
    rendered = set()
    for page in (DOCS / "api").glob("*.md"):
        rendered |= set(re.findall(r"^::: torchrl_o3f\.(\w+)\s*$", page.read_text(), re.M))
    assert namespaces and sorted(namespaces - rendered) == []


def _blocks(page: pathlib.Path, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", page.read_text(), flags=re.S)


PYTHON_TUTORIALS = [p for p in TUTORIALS if _blocks(p, "python")]


def _sweep_commands(page: pathlib.Path) -> list[str]:
    """The ``python recipes/sweep.py ...`` commands of a page's bash blocks, one line each."""
    commands = []
    for block in _blocks(page, "bash"):
        for command in block.replace("\\\n", " ").splitlines():
            command = command.split("#", 1)[0].strip()
            if command.startswith("python recipes/sweep.py"):
                commands.append(" ".join(command.split()))
    return commands


SWEEP_TUTORIALS = [p for p in TUTORIALS if _sweep_commands(p)]


@pytest.mark.slow
@pytest.mark.parametrize("page", PYTHON_TUTORIALS, ids=[p.stem for p in PYTHON_TUTORIALS])
def test_tutorial_runs_as_written(page, tmp_path, monkeypatch):
    """A tutorial's ```python blocks run in order in one namespace, as a reader runs them."""
    blocks = _blocks(page, "python")
    monkeypatch.chdir(tmp_path)  # whatever a tutorial writes stays out of the repository
    namespace = {"__name__": "docs_tutorial"}
    for block in blocks:
        exec(compile(block, str(page.relative_to(ROOT)), "exec"), namespace)


@pytest.mark.slow
@pytest.mark.parametrize("page", SWEEP_TUTORIALS, ids=[p.stem for p in SWEEP_TUTORIALS])
def test_tutorial_sweep_commands_compose(page, tmp_path):
    """The sweep commands of a bash-only tutorial (a cluster's, not run here) are valid: hydra
    composes each one, the launcher's keys and the typed schema included, with ``--cfg``
    (which prints the config and submits nothing)."""
    path = f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    env = dict(os.environ, PATH=path)  # `python` is this interpreter
    for block in _blocks(page, "bash"):  # the page's `export NAME=...`, pointed at tmp_path
        for name in re.findall(r"^export (\w+)=", block, flags=re.M):
            env[name] = str(tmp_path / name.lower())
    for command in _sweep_commands(page):
        if "--cfg" not in command:
            command += " --cfg job"
        result = subprocess.run(
            ["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert result.returncode == 0, f"{command}\n{result.stderr[-2000:]}"
        assert result.stdout.strip(), command

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


def test_maths_is_served_by_the_site_not_a_cdn():
    """MathJax comes from the `docs` extra, added to the site by a hook; no script is remote."""
    import tomllib

    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    scripts = config["extra_javascript"]
    assert not [s for s in scripts if re.match(r"(https?:)?//", s)], scripts
    assert "assets/mathjax/tex-mml-chtml.js" in scripts
    assert "docs/api/mathjax_assets.py" in config["hooks"]
    assert config["theme"]["font"] is False  # no Google Fonts either
    with open(ROOT / "pyproject.toml", "rb") as f:
        docs = tomllib.load(f)["project"]["optional-dependencies"]["docs"]
    assert any(d.startswith("django-static-mathjax") for d in docs)


def _docs_venv() -> pathlib.Path:
    return pathlib.Path(os.environ.get("O3F_DOCS_VENV", ROOT / ".venv-docs"))


@pytest.mark.slow
@pytest.mark.skipif(
    not (_docs_venv() / "bin" / "mkdocs").exists(), reason="the docs venv (bash .ci/docs)"
)
def test_the_built_site_renders_offline_and_shows_each_objects_source(tmp_path):
    site = tmp_path / "site"
    result = subprocess.run(
        [str(_docs_venv() / "bin" / "mkdocs"), "build", "--strict", "-d", str(site)],
        cwd=ROOT,
        env=dict(os.environ, NO_MKDOCS_2_WARNING="1"),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    pages = list(site.rglob("*.html"))
    assert pages
    for page in pages:
        html = page.read_text()
        # no script, stylesheet or font from the web
        remote = re.findall(r'<(?:script|link)[^>]+(?:src|href)="((?:https?:)?//[^"]+)"', html)
        assert remote == [], (page, remote)
    mathjax = site / "assets" / "mathjax"
    assert (mathjax / "tex-mml-chtml.js").stat().st_size > 100_000
    assert list((mathjax / "output" / "chtml" / "fonts" / "woff-v2").glob("*.woff"))
    api = (site / "api" / "trainers" / "index.html").read_text()
    assert "assets/mathjax/tex-mml-chtml.js" in api
    assert "Source code in <code>torchrl_o3f/trainers/trainer.py</code>" in api


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

"""A mkdocs hook: MathJax served by the site itself, so its maths renders offline.

The ``docs`` extra installs MathJax 3 (``django-static-mathjax``: MathJax's own distribution,
Apache-2.0, importable as ``mathjax``; Django is not needed). This hook adds the files the site
uses to the build under ``assets/mathjax/``: the ``tex-mml-chtml.js`` component that
``mkdocs.yml`` loads, the TeX extensions it loads on demand, its CommonHTML fonts and its menu.
The paths below ``assets/mathjax/`` are MathJax's own, so it finds them relative to its script.

Loaded by ``mkdocs.yml`` (``hooks: [docs/api/mathjax_assets.py]``); mkdocs does not copy it
into the site (``exclude_docs``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

#: where the site serves MathJax from (``extra_javascript`` in ``mkdocs.yml`` names its script)
SITE_FOLDER = "assets/mathjax"

#: MathJax's files the site needs, relative to its ``es5`` folder
ASSETS = ("tex-mml-chtml.js", "input/tex/extensions", "output/chtml/fonts/woff-v2", "ui")


def mathjax_root() -> Path:
    """MathJax's ``es5`` folder in the installed ``django-static-mathjax``.

    Raises:
        PluginError: when it is not installed (the ``docs`` extra installs it).
    """
    spec = importlib.util.find_spec("mathjax")
    if spec is not None and spec.submodule_search_locations:
        root = Path(next(iter(spec.submodule_search_locations))) / "static" / "mathjax" / "es5"
        if (root / ASSETS[0]).is_file():
            return root
    raise PluginError(
        "MathJax is not installed: install the docs extra (pip install -e '.[docs]', or let "
        "`bash .ci/docs` set up its venv)"
    )


def on_files(files: Files, config) -> Files:
    """Add MathJax's :data:`ASSETS` to the site, under :data:`SITE_FOLDER`."""
    root = mathjax_root()
    for asset in ASSETS:
        path = root / asset
        for source in sorted(path.rglob("*") if path.is_dir() else [path]):
            if source.is_file():
                rel = source.relative_to(root).as_posix()
                files.append(
                    File(
                        rel,
                        src_dir=str(root),
                        dest_dir=config["site_dir"],
                        use_directory_urls=False,
                        dest_uri=f"{SITE_FOLDER}/{rel}",
                    )
                )
    return files

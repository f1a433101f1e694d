"""A griffe extension: the package's reST docstring markup rendered as Markdown in the API pages.

The docstrings are Google style with reST inline markup (what Sphinx and the rest of the
PyTorch ecosystem read). mkdocstrings renders docstrings as Markdown, so before they are parsed
this extension rewrites, in every docstring of the package:

- ``Example:`` section headers to ``Examples:`` (the header griffe parses as doctest code);
- ``:class:`~torchrl_o3f.modules.QEnsemble``` and the other Python roles to a link to the
  object's entry in the API pages when the object is rendered there (relative names are resolved
  in the docstring's scope), and to inline code otherwise (torchrl, torch, private helpers);
- ``:math:`...``` and ``.. math::`` blocks to MathJax (``pymdownx.arithmatex``);
- an ``Args:`` / ``Attributes:`` entry naming several names (``low, high: the bounds.``) to
  one entry per name, so each is checked against the signature.

Loaded by ``mkdocs.yml`` (``extensions: [docs/api/rst_markup.py]``); mkdocs does not copy it
into the site (``exclude_docs``).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

#: the namespaces the API pages render, with every public name they export
RENDERED_NAMESPACES = (
    "torchrl_o3f.envs",
    "torchrl_o3f.modules",
    "torchrl_o3f.objectives",
    "torchrl_o3f.data",
    "torchrl_o3f.trainers",
    "torchrl_o3f.analysis",
)

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|exc|obj):`(~?)([^`]+)`")
_MATH_ROLE = re.compile(r":math:`([^`]+)`")
_EXAMPLE_HEADER = re.compile(r"^(\s*)Example:\s*$", flags=re.MULTILINE)


_SECTION = re.compile(
    r"^(\s*)(Args|Arguments|Parameters|Keyword Args|Keyword Arguments|Other Parameters"
    r"|Attributes):\s*$"
)
_SHARED_ENTRY = re.compile(r"^(\w+(?:\s*,\s*\w+)+)(\s*\([^)]*\))?:\s*(.*)$")


def _split_shared_entries(text: str) -> str:
    """``a, b: description`` in a parameter or attribute section -> one entry per name."""
    lines, out, section_indent, item_indent = text.split("\n"), [], None, None
    for line in lines:
        indent = len(line) - len(line.lstrip())
        header = _SECTION.match(line)
        if header:
            section_indent, item_indent = len(header.group(1)), None
        elif line.strip() and section_indent is not None and indent <= section_indent:
            section_indent = None
        elif line.strip() and section_indent is not None:
            item_indent = indent if item_indent is None else item_indent
            entry = _SHARED_ENTRY.match(line.strip()) if indent == item_indent else None
            if entry:
                names = [n.strip() for n in entry.group(1).split(",")]
                kind, desc = entry.group(2) or "", entry.group(3)
                pad = " " * indent
                out.append(f"{pad}{names[0]}{kind}: {desc}")
                tail = [f"{pad}{n}{kind}: as `{names[0]}`." for n in names[1:]]
                out.append("\x00" + "\n".join(tail))  # placed after the continuation
                continue
        out.append(line)
    # an entry's continuation lines stay with the first name; the others follow them
    merged, pending = [], None
    for line in out:
        if line.startswith("\x00"):
            pending = line[1:]
            continue
        if pending is not None:
            indent = len(line) - len(line.lstrip())
            first_indent = len(pending) - len(pending.lstrip())
            if not line.strip() or indent <= first_indent:
                merged.extend(pending.split("\n"))
                pending = None
        merged.append(line)
    if pending is not None:
        merged.extend(pending.split("\n"))
    return "\n".join(merged)


def _math_block(text: str) -> str:
    """``.. math::`` and its indented body -> an aligned ``$$ ... $$`` block."""
    lines, out, i = text.split("\n"), [], 0
    while i < len(lines):
        line = lines[i]
        if line.strip() != ".. math::":
            out.append(line)
            i += 1
            continue
        indent = line[: len(line) - len(line.lstrip())]
        body, i = [], i + 1
        while i < len(lines) and (not lines[i].strip() or lines[i].startswith(indent + " ")):
            body.append(lines[i].strip())
            i += 1
        while body and not body[-1]:
            body.pop()
        maths = "\n".join(b for b in body if b)
        if "&" in maths or "\\\\" in maths:
            maths = "\\begin{aligned}\n" + maths + "\n\\end{aligned}"
        out += [f"{indent}$$", *(indent + m for m in maths.split("\n")), f"{indent}$$", ""]
    return "\n".join(out)


class RstMarkup(griffe.Extension):
    """Rewrites reST roles, math and ``Example:`` headers in the package's docstrings."""

    def __init__(self, **options: Any) -> None:
        super().__init__()
        self.public: dict[str, str] = {}  # canonical path -> path of the rendered entry

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """Index the rendered objects, then rewrite every docstring of the package."""
        if pkg.path != "torchrl_o3f":
            return
        for namespace in RENDERED_NAMESPACES:
            self._index(pkg, namespace)
        for obj in self._walk(pkg):
            if obj.docstring is not None:
                obj.docstring.value = self._rewrite(obj.docstring.value, obj)

    def _index(self, pkg: griffe.Module, namespace: str) -> None:
        module = pkg[namespace.removeprefix("torchrl_o3f.")]
        self.public.setdefault(module.path, module.path)
        exported = module.exports
        for name, member in module.members.items():
            if name.startswith("_") or (exported is not None and name not in exported):
                continue
            if member.is_alias:
                try:
                    target = member.final_target
                except (griffe.AliasResolutionError, griffe.CyclicAliasError):
                    continue
                if not target.path.startswith("torchrl_o3f."):
                    continue
            else:
                target = member
            self._index_object(target, f"{module.path}.{name}")

    def _index_object(self, obj: Any, public_path: str) -> None:
        if not obj.docstring:  # not rendered (show_if_no_docstring is off): no entry to link
            return
        self.public.setdefault(obj.path, public_path)
        if obj.is_class:
            for name, member in obj.members.items():
                if not name.startswith("_") and not member.is_alias:
                    self._index_object(member, f"{public_path}.{name}")

    def _walk(self, obj: Any):
        yield obj
        for member in obj.members.values():
            if not member.is_alias:
                yield from self._walk(member)

    def _target(self, name: str, obj: Any) -> str | None:
        """The rendered entry ``name`` refers to from ``obj``'s docstring, or None."""
        head, _, rest = name.partition(".")
        candidates = [name] if name.startswith("torchrl_o3f.") else []
        scope = obj
        while scope is not None and not name.startswith("torchrl_o3f."):
            try:
                resolved = scope.resolve(head)
            except (griffe.NameResolutionError, AttributeError):
                scope = scope.parent
                continue
            candidates.append(f"{resolved}.{rest}" if rest else resolved)
            break
        for path in candidates:
            if path in self.public:
                return self.public[path]
            if path in self.public.values():
                return path
        return None

    def _rewrite(self, text: str, obj: Any) -> str:
        text = _EXAMPLE_HEADER.sub(r"\1Examples:", text)
        text = _math_block(text)
        text = _split_shared_entries(text)
        text = _MATH_ROLE.sub(lambda m: f"\\({m.group(1)}\\)", text)

        def role(match: re.Match) -> str:
            short, name = match.group(1) == "~", match.group(2).strip()
            shown = name.rsplit(".", 1)[-1] if short else name
            target = self._target(name, obj)
            return f"[`{shown}`][{target}]" if target else f"`{shown}`"

        return _ROLE.sub(role, text)

"""``.. changelog-md:: ../CHANGELOG.md``: the repository's Markdown changelog on the site, one source.

CHANGELOG.md is written in a small subset of Markdown, which this directive turns into
reStructuredText: ``##``/``###`` headings, ``-`` bullets (continuation lines indented by two
spaces), paragraphs, inline code, ``**bold**`` and ``[text](https://...)`` links. The ``#`` title
is left out (the page has its own). Anything else (tables, images, relative links, HTML) is
refused with the line, so that the site never shows Markdown syntax as text.
"""

import pathlib
import re

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.errors import ExtensionError
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

UNDERLINES = {"##": "-", "###": "~"}
LINK = re.compile(r"\[([^\]]+)\]\(([^)]+)\)")
CODE = re.compile(r"`([^`]+)`")
REFUSED = re.compile(r"^\s*(\||!\[|<|```)")


def _inline(text, where):
    def link(match):
        label, url = match.groups()
        if not url.startswith(("https://", "http://")):
            raise ExtensionError(f"{where}: only absolute links can go on the site: {match.group(0)}")
        return f"`{label} <{url}>`__"

    parts = CODE.split(text)  # odd indices: code spans, left exactly as written
    return "".join(f"``{p}``" if i % 2 else LINK.sub(link, p) for i, p in enumerate(parts))


def to_rst(markdown, source="CHANGELOG.md"):
    """reStructuredText lines for ``markdown`` (the subset described in the module docstring)."""
    out = []
    for number, line in enumerate(markdown.splitlines(), 1):
        where = f"{source}:{number}"
        if REFUSED.match(line):
            raise ExtensionError(f"{where}: not in the Markdown subset the site shows: {line!r}")
        marker, _, title = line.partition(" ")
        if marker == "#":
            continue
        if marker in UNDERLINES:
            title = _inline(title, where)
            out += ["", title, UNDERLINES[marker] * len(title), ""]
        elif line.startswith("- "):
            out.append("* " + _inline(line[2:], where))
        else:
            out.append(_inline(line, where))
    return out


class ChangelogMarkdown(SphinxDirective):
    required_arguments = 1

    def run(self):
        path = (pathlib.Path(self.env.srcdir) / self.arguments[0]).resolve()
        self.env.note_dependency(str(path))
        container = nodes.container()
        nested_parse_with_titles(
            self.state, StringList(to_rst(path.read_text(), path.name), source=str(path)), container
        )
        return container.children


def setup(app):
    app.add_directive("changelog-md", ChangelogMarkdown)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

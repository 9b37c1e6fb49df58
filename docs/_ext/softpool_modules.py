"""``.. softpool-modules::``: every source file of the package with its summary, read from the files.

The design page's module list is generated so that it stays true: a module added, split or
removed appears or disappears at the next build. A Python module's summary is the first paragraph
of its docstring (read with :mod:`ast`, nothing is imported, so modules of optional packages are
listed too); another source file's (``softpool.cu``, ``host_shim.h``) is its leading ``//``
comment's first paragraph. A file without a summary fails the build.
"""

import ast
import pathlib

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.errors import ExtensionError
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

#: Files of the package that are source but not Python.
OTHER_SOURCES = ("*.cu", "*.h")


def _first_paragraph(text):
    lines = []
    for line in text.strip().splitlines():
        if not line.strip():
            break
        lines.append(line.strip())
    return " ".join(lines)


def summary(path):
    """The first paragraph of ``path``'s docstring (Python) or leading ``//`` comment (C++/CUDA)."""
    text = path.read_text()
    if path.suffix == ".py":
        doc = ast.get_docstring(ast.parse(text))
    else:
        comment = []
        for line in text.splitlines():
            if not line.startswith("//"):
                break
            comment.append(line[2:].strip())
        doc = "\n".join(comment)
    if not doc:
        raise ExtensionError(f"{path} has no docstring or leading comment for the design page's module list")
    return _first_paragraph(doc)


def sources(package_dir):
    """Source files of the package, in the order of their paths."""
    files = list(package_dir.rglob("*.py"))
    for pattern in OTHER_SOURCES:
        files.extend(package_dir.rglob(pattern))
    return sorted(f for f in files if "__pycache__" not in f.parts)


def module_lines(package_dir):
    root = package_dir.parent
    lines = [".. list-table::", "   :header-rows: 1", "   :widths: 30 70", "", "   * - file", "     - what it holds"]
    for path in sources(package_dir):
        lines += [f"   * - ``{path.relative_to(root).as_posix()}``", f"     - {summary(path)}"]
    return lines


class SoftpoolModules(SphinxDirective):
    required_arguments = 1  # the package directory, relative to the docs source directory

    def run(self):
        package_dir = (pathlib.Path(self.env.srcdir) / self.arguments[0]).resolve()
        for path in sources(package_dir):
            self.env.note_dependency(str(path))
        content = StringList(module_lines(package_dir), source="<softpool-modules>")
        container = nodes.container()
        nested_parse_with_titles(self.state, content, container)
        return container.children


def setup(app):
    app.add_directive("softpool-modules", SoftpoolModules)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

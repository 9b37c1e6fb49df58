"""``.. softpool-api:: module``: the reference of every name in ``module.__all__``.

The API pages are generated from ``__all__`` so that a public name added to
the library appears in the reference (and, through nitpicky cross-references
and the docs test, is checked) without anyone editing a page.
"""

import importlib
import inspect

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles


def public_names(module):
    """The documented names of ``module``: its ``__all__`` without dunders (``__version__``)."""
    return [name for name in module.__all__ if not name.startswith("__")]


def _documented_members(cls):
    """Public methods and properties defined by ``cls`` itself that carry a docstring."""
    return [
        name
        for name, value in vars(cls).items()
        if not name.startswith("_")
        and getattr(value, "__doc__", None)
        and (inspect.isfunction(value) or isinstance(value, property))
    ]


def api_lines(modname):
    """reStructuredText for the module's docstring and one autodoc entry per public name."""
    module = importlib.import_module(modname)
    lines = [f".. automodule:: {modname}", ""]
    for name in public_names(module):
        obj = getattr(module, name)
        if inspect.isclass(obj):
            lines.append(f".. autoclass:: {modname}.{name}")
            members = _documented_members(obj)
            if members:
                lines.append(f"   :members: {', '.join(members)}")
        elif callable(obj):
            lines.append(f".. autofunction:: {modname}.{name}")
        else:
            lines.append(f".. autodata:: {modname}.{name}")
        lines.append("")
    return lines


class SoftpoolAPI(SphinxDirective):
    required_arguments = 1

    def run(self):
        modname = self.arguments[0]
        self.env.note_dependency(importlib.import_module(modname).__file__)
        container = nodes.container()
        nested_parse_with_titles(self.state, StringList(api_lines(modname), source=f"<api {modname}>"), container)
        return container.children


def setup(app):
    app.add_directive("softpool-api", SoftpoolAPI)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

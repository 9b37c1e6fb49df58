"""Math rendered to MathML at build time (``html_math_renderer = "mathml"``).

Browsers draw MathML themselves (Chromium since 109, Firefox, Safari), so the
pages need no JavaScript and no network: MathJax, Sphinx's default, loads
from a CDN and leaves raw LaTeX on a page read offline. The conversion is
docutils' own LaTeX-to-MathML translator; a formula it cannot translate is a
build warning (an error under ``-W``).
"""

from docutils import nodes
from docutils.utils.math import MathError, latex2mathml
from sphinx.util import logging

logger = logging.getLogger(__name__)


def _mathml(translator, node, block):
    tex = node.astext()
    try:
        translator.body.append(latex2mathml.tex2mathml(tex, as_block=block))
    except MathError as exc:
        logger.warning("cannot render %r as MathML: %s", tex, exc, location=node)
        translator.body.append(f"<code>{translator.encode(tex)}</code>")
    raise nodes.SkipNode


def visit_inline(translator, node):
    _mathml(translator, node, block=False)


def visit_block(translator, node):
    translator.body.append('<div class="math-block">')
    try:
        _mathml(translator, node, block=True)
    finally:
        translator.body.append("</div>")


def setup(app):
    app.add_html_math_renderer("mathml", (visit_inline, None), (visit_block, None))
    return {"parallel_read_safe": True, "parallel_write_safe": True}

"""Sphinx configuration: the softpool_nd documentation site.

Build (offline; warnings are errors, every cross-reference must resolve)::

    pip install -e '.[docs]'
    python -m sphinx -W --keep-going -n -b html docs docs/_build/html
"""

import pathlib
import sys

DOCS = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))
sys.path.insert(0, str(DOCS.parent))  # document this checkout, not an installed copy

import softpool_nd  # noqa: E402 (after the sys.path entries above)

project = "softpool_nd"
author = "the softpool_nd authors"
copyright = "2026, the softpool_nd authors"
release = version = softpool_nd.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "numpydoc",
    "softpool_api",
    "softpool_modules",
    "changelog_md",
    "mathml",
]
html_math_renderer = "mathml"  # no MathJax: it needs the network

exclude_patterns = ["_build", "_inventories", "gallery/*.py"]
nitpicky = True
default_role = "py:obj"

# numpydoc: parameter types stay plain text (they are prose such as "int or tuple of int");
# cross-references in descriptions still resolve, and nitpicky checks them
numpydoc_show_class_members = False
numpydoc_xref_param_type = False
numpydoc_use_plots = False
autodoc_typehints = "none"
autodoc_member_order = "bysource"

# Offline inventories: small subsets of the projects' own objects.inv, made by _inventories/make.py
# (the build never touches the network; references to names missing here fail the nitpicky build)
intersphinx_mapping = {
    name: (url, str(DOCS / "_inventories" / f"{name}.inv"))
    for name, url in {
        "numpy": "https://numpy.org/doc/stable/",
        "torch": "https://docs.pytorch.org/docs/stable/",
        "jax": "https://docs.jax.dev/en/latest/",
        "dask": "https://docs.dask.org/en/stable/",
        "cupy": "https://docs.cupy.dev/en/stable/",
    }.items()
}
intersphinx_timeout = 1

html_theme = "pydata_sphinx_theme"
html_title = f"softpool_nd {release}"
html_static_path = ["_static"]
html_css_files = ["softpool.css"]
html_theme_options = {
    "navbar_end": ["navbar-icon-links"],
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "header_links_before_dropdown": 5,
}
# the left sidebar lists a section's pages: only the user guides have several
html_sidebars = {
    "guides/*": ["sidebar-nav-bs"],
    **{page: [] for page in ["search", "genindex", *(p.stem for p in DOCS.glob("*.rst"))]},
}
html_show_sourcelink = False
html_last_updated_fmt = None

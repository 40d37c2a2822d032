"""Sphinx configuration of the aspiics documentation."""

import os
import warnings
from datetime import UTC, datetime

import matplotlib

matplotlib.use("Agg")

from aspiics import __version__

project = "aspiics"
author = "The aspiics developers"
copyright = f"{datetime.now(UTC).year}, {author}"
release = __version__
version = ".".join(__version__.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_automodapi.automodapi",
    "sphinx_automodapi.smart_resolver",
    "sphinx_gallery.gen_gallery",
]

exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints"]
source_suffix = ".rst"
root_doc = "index"
default_role = "obj"

# numpydoc + automodapi
numpydoc_show_class_members = False
numpydoc_xref_param_type = False
automodapi_toctreedirnm = "api"
automodsumm_inherited_members = False
autodoc_typehints = "none"

# The machine that builds the docs may be offline: no intersphinx inventories, and
# references to external packages are left as plain text.
nitpicky = False
suppress_warnings = ["config.cache"]

# Theme
try:
    from sunpy_sphinx_theme import PNG_ICON  # noqa: F401

    html_theme = "sunpy"
except ImportError:  # pragma: no cover
    html_theme = "alabaster"
html_title = f"aspiics {release}"
html_static_path = []
html_theme_options = {"navbar_links": []} if html_theme == "sunpy" else {}

# sphinx-gallery
sphinx_gallery_conf = {
    "examples_dirs": os.path.join("..", "examples"),
    "gallery_dirs": "generated/gallery",
    "filename_pattern": r"^((?!skip_).)*$",
    "default_thumb_file": None,
    "abort_on_example_error": True,
    "remove_config_comments": True,
    "only_warn_on_example_error": False,
    "matplotlib_animations": False,
    "within_subsection_order": "FileNameSortKey",
}

# Examples run offline: silence the IERS auto-download attempt of astropy.
from astropy.utils import iers

iers.conf.auto_download = False
warnings.filterwarnings("ignore", message=".*Tried to get polar motions.*")


def _plain_cite_role(name, rawtext, text, lineno, inliner, options=None, content=None):
    """Render ``:cite:t:`key``` (used in docstrings inherited from sunpy) as plain text."""
    from docutils import nodes

    return [nodes.Text(text)], []


def setup(app):
    """Give the ``cite`` roles of docstrings inherited from sunpy a plain rendering (no bibtex)."""
    from sphinx.domains import Domain

    class CiteDomain(Domain):
        name = "cite"
        label = "Citations rendered as plain text"
        roles = {"t": _plain_cite_role, "p": _plain_cite_role}  # noqa: RUF012 (the Sphinx API)

    app.add_domain(CiteDomain)

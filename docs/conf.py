"""Sphinx configuration of the skgfe documentation.

Build with ``make docs`` (``python -m sphinx -W --keep-going -b html docs
docs/_build/html``). The build needs no network: intersphinx is off, the theme
fetches nothing, and the gallery examples run on a CPU. Nor do the built pages:
math is rendered by a copy of MathJax bundled into ``_static/mathjax``
(sphinx-mathjax-offline), not by MathJax from a CDN.
"""

import re
import sys
import warnings
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
# Document the checkout the docs belong to, even where skgfe is not installed.
sys.path.insert(0, str(ROOT))

import torch

import skgfe

# The gallery examples train small networks, for which torch's intra-op threads
# only contend for the (few, often shared) cores of a build machine: on two busy
# cores one thread trains several times faster. The examples run in this
# process, so this applies to all of them.
torch.set_num_threads(1)

# -- Project -----------------------------------------------------------------

project = "skgfe"
author = "The skgfe developers"
copyright = "2024-2025, The skgfe developers"
release = skgfe.__version__
version = re.sub(r"(\.dev\d*|rc\d*|a\d*|b\d*)$", "", release)

# -- General -----------------------------------------------------------------

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    # Copies MathJax 3 into _static/mathjax and points mathjax_path at it, so
    # that math renders without network access (the extension's module name
    # has dashes).
    "sphinx-mathjax-offline",
    "myst_parser",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints"]
# Markdown (MyST) for the benchmarks page, which includes the result files
# that the benchmark scripts write (benchmarks/results/*.md) as they are.
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
# Python objects outside this project (sklearn, numpy, torch) have no inventory
# to resolve against (no intersphinx, no network), so missing references are
# not reported.
nitpicky = False
default_role = "literal"
pygments_style = "sphinx"

# -- autodoc, autosummary, numpydoc ------------------------------------------

autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {"inherited-members": False}
autodoc_typehints = "none"
autoclass_content = "class"

numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
numpydoc_xref_param_type = False
numpydoc_validation_checks = set()

# -- HTML ----------------------------------------------------------------------

html_theme = "pydata_sphinx_theme"
html_title = f"skgfe {release}"
html_static_path = ["_static"]
html_css_files = ["skgfe.css"]
html_show_sourcelink = False
html_theme_options = {
    # Everything the theme shows is local: no version switcher JSON, no
    # analytics, no remote icons or logos, so the build fetches nothing.
    "navbar_end": ["theme-switcher", "navbar-icon-links"],
    "icon_links": [],
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "show_prev_next": True,
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version", "theme-version"],
    "secondary_sidebar_items": ["page-toc", "sg_download_links", "sg_launcher_links"],
}
html_sidebars = {
    "install": [],
    "quickstart": [],
    "changelog": [],
    "benchmarks": [],
}

# -- sphinx-gallery --------------------------------------------------------------

sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    # Run every plot_*.py script (all of them are fast enough to run on a CPU).
    "filename_pattern": r"/plot_",
    "ignore_pattern": r"__init__\.py",
    "within_subsection_order": "FileNameSortKey",
    "matplotlib_animations": False,
    "plot_gallery": "True",
    # "Examples using X" mini-galleries on the API pages.
    "doc_module": ("skgfe",),
    "backreferences_dir": "gen_modules/backreferences",
    "remove_config_comments": True,
    "show_memory": False,
    # The run time of every example is measured in the build: the footer of
    # each example ("Total running time of the script") and the computation
    # times page (auto_examples/sg_execution_times), which the gallery's index
    # links. Written even where SOURCE_DATE_EPOCH is set (which turns it off by
    # default), since the docs link that page.
    "write_computation_times": True,
    "min_reported_time": 0,
    "download_all_examples": False,
    "capture_repr": ("_repr_html_", "__repr__"),
}

# The examples end with plt.show(), which warns under sphinx-gallery's non-GUI
# backend; keep the build log quiet.
warnings.filterwarnings(
    "ignore",
    category=UserWarning,
    message="Matplotlib is currently using agg, which is a non-GUI backend",
)

# -- Computation times page -------------------------------------------------------
#
# sphinx-gallery's sg_execution_times pages load jQuery and DataTables (to sort
# the table) from CDNs. The docs load nothing remote, so that block is dropped:
# the table is the same, only not sortable.

_SG_REMOTE_SCRIPTS = re.compile(
    r"^( *)\.\. raw:: html\n\n(?:\1 .*\n|\n)*?(?=\1\.\. list-table::)",
    re.MULTILINE,
)


def drop_remote_scripts(app, docname, source):
    """Remove the CDN scripts from sphinx-gallery's computation times pages."""
    if docname.rsplit("/", 1)[-1] == "sg_execution_times":
        source[0] = _SG_REMOTE_SCRIPTS.sub("", source[0])


# -- Docstrings inherited from scikit-learn -----------------------------------
#
# The API pages document inherited methods such as ``set_output`` with
# scikit-learn's docstrings, which cross-reference scikit-learn's own user guide,
# glossary and gallery. Those targets do not exist here (and intersphinx, which
# could reach them, needs the network), so their roles are reduced to text.

_SKLEARN_ROLE = re.compile(r":(?:ref|term):`([^`<]*?)\s*(?:<([^`>]*)>)?`")


def _sklearn_role_as_text(match):
    text, target = match[1].strip(), match[2]
    if target is None and match[0].startswith(":ref:"):
        return "the scikit-learn documentation"  # a bare label is no prose
    return text


def strip_sklearn_references(app, what, name, obj, options, lines):
    """Turn the :ref: and :term: roles of scikit-learn's docstrings into text."""
    module = getattr(obj, "__module__", None) or ""
    if module == "sklearn" or module.startswith("sklearn."):
        text = _SKLEARN_ROLE.sub(_sklearn_role_as_text, "\n".join(lines))
        lines[:] = text.split("\n")


# -- Types in numpydoc sections --------------------------------------------------
#
# A type such as ``ndarray of shape (n_features_in_,)`` is rendered as
# reStructuredText, where a word ending in an underscore is a hyperlink reference
# ("Unknown target name"). Such names in the type of a parameter or attribute
# are quoted, which renders them as code (the default role is "literal").

_NUMPYDOC_FIELD = re.compile(r"^(\s*\*{0,2}\w+\s+:\s+)(.+)$")
_TRAILING_UNDERSCORE_NAME = re.compile(r"(?<![`\w])([A-Za-z]\w*_)(?![`\w])")


def quote_attribute_names_in_types(app, what, name, obj, options, lines):
    """Quote names that end in an underscore in numpydoc type specifications."""
    for i, line in enumerate(lines):
        field = _NUMPYDOC_FIELD.match(line)
        if field:
            types = _TRAILING_UNDERSCORE_NAME.sub(r"`\1`", field[2])
            lines[i] = field[1] + types


def setup(app):
    app.connect("source-read", drop_remote_scripts)
    # Both run before numpydoc (priority 500), which parses the docstring lines.
    app.connect("autodoc-process-docstring", strip_sklearn_references, priority=400)
    app.connect(
        "autodoc-process-docstring", quote_attribute_names_in_types, priority=400
    )

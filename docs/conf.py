"""Sphinx configuration of the skgfe documentation.

Build with ``make docs`` (``python -m sphinx -W --keep-going -b html docs
docs/_build/html``). The build needs no network: intersphinx is off, the theme
fetches nothing, and the gallery examples run on a CPU.
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
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints"]
source_suffix = {".rst": "restructuredtext"}
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
    "reference_url": {"skgfe": None},
    "remove_config_comments": True,
    "show_memory": False,
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

# -- Benchmark results -----------------------------------------------------------
#
# The benchmark scripts write Markdown files to benchmarks/results/ (committed).
# Sphinx reads no Markdown without myst-parser, so the committed files are
# rendered here to reStructuredText, into an include file that
# benchmarks.rst pulls in. Missing files simply leave a note.

BENCHMARK_RESULTS = [
    ("flows.md", "Flows, solvers and training modes"),
    ("data_efficiency.md", "Data efficiency"),
    ("data_efficiency_timing.md", "Time on an idle machine"),
]

_MD_TABLE_SEP = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")
_MD_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_MD_LIST = re.compile(r"^(\s*)([-*+]|\d+[.)])\s+(.*)$")
_MD_INLINE = re.compile(
    r"(?P<code>`+)(?P<code_text>.+?)(?P=code)"
    r"|\[(?P<link_text>[^\]]+)\]\((?P<url>[^)\s]+)\)"
    r"|\*\*(?P<bold>[^*]+)\*\*"
    r"|(?<![\w*])[*_](?P<em>[^*_\s][^*_]*?)[*_](?![\w*])"
)


def _escape_rst(text):
    """Escape characters that reStructuredText would read as markup."""
    return re.sub(r"([\\`*_|])", r"\\\1", text)


def _md_inline(text):
    """Convert Markdown inline markup (code, links, bold, italic) to rST."""
    pieces = []  # (is_markup, rst)
    pos = 0
    for match in _MD_INLINE.finditer(text):
        pieces.append((False, _escape_rst(text[pos : match.start()])))
        if match["code"]:
            code = match["code_text"].strip()
            rst = f"``{code}``" if "`" not in code else _escape_rst(code)
        elif match["url"]:
            rst = f"`{_escape_rst(match['link_text'])} <{match['url']}>`__"
        elif match["bold"]:
            rst = f"**{_escape_rst(match['bold'].strip())}**"
        else:
            rst = f"*{_escape_rst(match['em'].strip())}*"
        pieces.append((True, rst))
        pos = match.end()
    pieces.append((False, _escape_rst(text[pos:])))
    # rST inline markup must not touch word characters: separate it with an
    # escaped space, which renders as nothing.
    out = ""
    for k, (is_markup, rst) in enumerate(pieces):
        if is_markup and out and not out[-1].isspace() and out[-1] not in "([{'\"-/":
            out += "\\ "
        elif not is_markup and k and pieces[k - 1][0] and rst[:1].isalnum():
            out += "\\ "
        out += rst
    return out


def _md_table(rows):
    """A Markdown pipe table (header, separator, body) as an rST list-table."""

    def cells(row):
        row = row.strip()
        row = row[1:] if row.startswith("|") else row
        row = row[:-1] if row.endswith("|") and not row.endswith("\\|") else row
        return [c.strip() for c in re.split(r"(?<!\\)\|", row)]

    header, body = cells(rows[0]), [cells(r) for r in rows[2:]]
    n_cols = len(header)
    lines = [".. list-table::", "   :header-rows: 1", "   :class: benchmark-table", ""]
    for row in [header, *body]:
        row = (row + [""] * n_cols)[:n_cols]
        for j, cell in enumerate(row):
            text = _md_inline(cell.replace("\\|", "|")) or "\\ "
            if re.match(r"^([-+]|\d+[.)])(\s|$)", text):
                text = "\\" + text  # not a list inside the cell
            lines.append(f"   {'*' if j == 0 else ' '} - {text}")
    return lines + [""]


def markdown_to_rst(markdown, title):
    """Render the Markdown of a benchmark results file as an rST section.

    Handles what the benchmark scripts write: headings, paragraphs, lists,
    pipe tables, fenced code and inline code, links, bold and italic. The
    first top-level heading (if any) becomes the section title; deeper
    headings become subsections and rubrics.
    """
    lines = markdown.splitlines()
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is not None:
        heading = _MD_HEADING.match(lines[first])
        if heading and len(heading[1]) == 1:
            title = heading[2]
            lines = lines[first + 1 :]
    title = _md_inline(title)
    out = [title, "-" * len(title), ""]
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            out.append("")
            i += 1
        elif line.lstrip().startswith(("```", "~~~")):
            fence = line.lstrip()[:3]
            language = line.lstrip()[3:].strip() or "text"
            out += ["", f".. code-block:: {language}", ""]
            i += 1
            while i < len(lines) and not lines[i].lstrip().startswith(fence):
                out.append(f"   {lines[i]}" if lines[i].strip() else "")
                i += 1
            out.append("")
            i += 1
        elif (
            line.lstrip().startswith("|")
            and i + 1 < len(lines)
            and (_MD_TABLE_SEP.match(lines[i + 1]))
        ):
            j = i + 2
            while j < len(lines) and lines[j].lstrip().startswith("|"):
                j += 1
            out += ["", *_md_table(lines[i:j])]
            i = j
        elif heading := _MD_HEADING.match(line):
            text = _md_inline(heading[2])
            if len(heading[1]) <= 2:
                out += ["", text, "~" * len(text), ""]
            else:
                out += ["", f".. rubric:: {text}", ""]
            i += 1
        elif item := _MD_LIST.match(line):
            out.append("")  # rST wants blank lines around (nested) list items
            indent = "  " * (len(item[1].expandtabs(4)) // 2)
            bullet = "#." if item[2][0].isdigit() else "-"
            out.append(f"{indent}{bullet} {_md_inline(item[3])}")
            i += 1
            # Indented (or lazy) continuation lines of the item.
            while (
                i < len(lines)
                and lines[i].strip()
                and not _MD_LIST.match(lines[i])
                and not lines[i].lstrip().startswith(("|", "#", "```", "~~~"))
            ):
                out[-1] += " " + _md_inline(lines[i].strip())
                i += 1
            out.append("")
        elif line.startswith(">"):
            out += ["", f"   {_md_inline(line.lstrip('> '))}", ""]
            i += 1
        else:
            out.append(_md_inline(line.strip()))
            i += 1
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip() + "\n"


def render_benchmark_results():
    """Write docs/generated/benchmark_results.inc from benchmarks/results/.

    Each committed ``<name>.md`` becomes a section; a ``<name>.png`` next to it
    (the benchmark scripts write one) is shown under its heading.
    """
    results_dir = ROOT / "benchmarks" / "results"
    generated = DOCS / "generated"
    generated.mkdir(exist_ok=True)
    parts = []
    for name, title in BENCHMARK_RESULTS:
        path = results_dir / name
        if not path.is_file():
            continue
        rst = markdown_to_rst(path.read_text(encoding="utf-8"), title)
        figure = path.with_suffix(".png")
        if figure.is_file():
            data = figure.read_bytes()
            copy = generated / f"benchmark_{figure.name}"
            if not copy.is_file() or copy.read_bytes() != data:
                copy.write_bytes(data)
            # After the section title (its first two lines) and a blank line.
            head, _, body = rst.partition("\n\n")
            rst = (
                f"{head}\n\n.. image:: /generated/{copy.name}\n"
                f"   :alt: {figure.name}\n\n{body}"
            )
        parts.append(f"{rst}\n*Source:* ``benchmarks/results/{name}``.\n")
    if not parts:
        parts.append(
            ".. note::\n\n"
            "   No benchmark results are committed in this checkout yet: the\n"
            "   scripts in ``benchmarks/`` write them to ``benchmarks/results/``.\n"
        )
    text = "\n\n".join(parts)
    target = generated / "benchmark_results.inc"
    # Rewrite only on change, so that an unchanged page is not rebuilt.
    if not target.is_file() or target.read_text(encoding="utf-8") != text:
        target.write_text(text, encoding="utf-8")


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
    render_benchmark_results()
    # Both run before numpydoc (priority 500), which parses the docstring lines.
    app.connect("autodoc-process-docstring", strip_sklearn_references, priority=400)
    app.connect(
        "autodoc-process-docstring", quote_attribute_names_in_types, priority=400
    )

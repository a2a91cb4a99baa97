"""Functions short enough to read: no function of skgfe has more than 60 code lines.

Code lines are the lines of a function's body that hold code (its docstring,
comments and blank lines excluded); nested functions count within their parent.
"""

import ast
import io
import tokenize
from pathlib import Path

import skgfe

LIMIT = 60
PACKAGE = Path(skgfe.__file__).parent


def code_lines(source):
    """The numbers of the lines of ``source`` that hold a code token."""
    skipped = {
        tokenize.COMMENT,
        tokenize.NL,
        tokenize.NEWLINE,
        tokenize.INDENT,
        tokenize.DEDENT,
        tokenize.ENDMARKER,
    }
    lines = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in skipped:
            lines.update(range(token.start[0], token.end[0] + 1))
    return lines


def function_lengths(path, root=PACKAGE):
    source = path.read_text()
    lines = code_lines(source)
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            body = set(range(node.body[0].lineno, node.end_lineno + 1)) & lines
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(
                getattr(first, "value", None), ast.Constant
            ):
                body -= set(range(first.lineno, first.end_lineno + 1))
            yield f"{path.relative_to(root)}:{node.lineno} {node.name}", len(body)


def test_no_function_has_more_than_60_code_lines():
    long = {
        where: n
        for path in sorted(PACKAGE.rglob("*.py"))
        for where, n in function_lengths(path)
        if n > LIMIT
    }
    assert not long, f"functions over {LIMIT} code lines: {long}"


def test_the_measure_counts_code_not_docstrings_or_comments(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        "def f():\n"
        '    """Doc.\n\n    More.\n    """\n'
        "    # a comment\n"
        "\n"
        "    x = 1\n"
        "    return x\n"
    )
    [(_, n)] = function_lengths(probe, root=tmp_path)
    assert n == 2

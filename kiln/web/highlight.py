"""Network texts shown highlighted, by Pygments (a pip package): a small lexer for Caffe's text format."""

from __future__ import annotations

from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexer import RegexLexer
from pygments.lexers import PythonLexer
from pygments.token import Comment, Keyword, Name, Number, Punctuation, String, Text


class PrototxtLexer(RegexLexer):
    """Protocol-buffer text format as Caffe network files use it."""

    name = "Caffe prototxt"
    aliases = ["prototxt"]
    tokens = {
        "root": [
            (r"#.*?$", Comment.Single),
            (r'"(\\\\|\\"|[^"])*"' + r"|'(\\\\|\\'|[^'])*'", String),
            (r"[A-Za-z_][A-Za-z0-9_]*(?=\s*[:{])", Name.Attribute),
            (r"\b(true|false|True|False)\b", Keyword.Constant),
            (r"\b[A-Z][A-Z0-9_]*\b", Name.Constant),
            (r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", Number),
            (r"[{}:\[\],;<>]", Punctuation),
            (r"\s+|.", Text),
        ]
    }


def highlighted(text: str, language: str = "prototxt", mark_line: int = 0) -> str:
    """HTML with line numbers, ``mark_line`` (1-based, 0 for none) marked; css from :func:`css`."""
    lexer = PythonLexer() if language == "python" else PrototxtLexer()
    formatter = HtmlFormatter(
        linenos="table", cssclass="code", hl_lines=[mark_line] if mark_line else [], wrapcode=True
    )
    return highlight(text, lexer, formatter)


def css() -> str:
    return HtmlFormatter(cssclass="code", style="default").get_style_defs(".code")

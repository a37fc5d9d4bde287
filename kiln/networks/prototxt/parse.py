"""Protocol buffer text format as Caffe reads ``.prototxt`` files, checked against Caffe's messages.

Two steps, each raising :class:`PrototxtError` with a line and a column:

1. syntax: ``tokenize`` and a recursive-descent reader turn the text into fields and values
   (messages in ``{}`` or ``<>``, ``:`` optional before a message, ``[a, b]`` lists, ``;``/``,``
   separators, ``#`` comments, single or double quoted strings with C escapes, adjacent strings
   joined, decimal/hex/octal integers, floats with an optional ``f`` suffix, ``inf`` and ``nan``);
2. schema: the fields are checked against :mod:`.schema` (unknown field, repeated singular field,
   wrong type, out of range, unknown enum value), giving :class:`Msg` trees.

Nothing else escapes :func:`parse_net`: every problem is a :class:`PrototxtError`.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NoReturn

from .schema import CAFFE_ONLY_LAYER_FIELDS, INT_RANGES, MESSAGES, OLD_NET_FIELDS, Field

MAX_DEPTH = 64  # nested messages; Caffe's own files use 4
MAX_TEXT = 4_000_000  # characters (GoogLeNet is ~60 kB)


class PrototxtError(ValueError):
    """A network text that cannot be used, with the 1-based line and column to mark in the editor.

    ``kind`` tells the class of problem: ``syntax``, ``unknown_field``, ``value`` (a field's value
    does not fit it), ``unknown_type`` (layer type), ``structure`` (layers, blobs, rules), ``bottom``
    (a bottom no layer produces at a stage), ``shape`` (a shape that cannot work for the input).
    ``expected`` says what would have been accepted there, when that is one short phrase.
    """

    def __init__(self, message: str, line: int, column: int, *, kind: str = "syntax", expected: str = "") -> None:
        self.message = message
        self.line = line
        self.column = column
        self.kind = kind
        self.expected = expected
        super().__init__(f"line {line}, column {column}: {message}")

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across process pools
        return (_rebuild_error, (self.message, self.line, self.column, self.kind, self.expected))

    def as_dict(self) -> dict[str, Any]:
        return {
            "message": self.message,
            "line": self.line,
            "column": self.column,
            "kind": self.kind,
            "expected": self.expected,
        }


def _rebuild_error(message: str, line: int, column: int, kind: str, expected: str) -> PrototxtError:
    return PrototxtError(message, line, column, kind=kind, expected=expected)


def did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


# ------------------------------------------------------------------------------------------------
# Tokens
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Token:
    kind: str  # ident, number, string, punct, end
    text: str
    line: int
    column: int
    value: Any = None  # decoded string for string tokens


_TOKEN_RE = re.compile(
    r"""
    (?P<space>[ \t\r\f\v]+)
  | (?P<newline>\n)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\[^\n])*"|'(?:[^'\\\n]|\\[^\n])*')
  | (?P<badstring>["'])
  | (?P<number>(?:\d|\.\d)[A-Za-z0-9_.]*(?:(?<=[eE])[-+][0-9A-Za-z_.]*)?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>[{}\[\]<>:;,\-/.])
    """,
    re.VERBOSE,
)
_INT_RE = re.compile(r"0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*")
_FLOAT_RE = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?[fF]?")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f", "v": "\v", "\\": "\\"}
_ESCAPES.update({"'": "'", '"': '"', "?": "?"})
_ESCAPE_RE = re.compile(r"\\(?:([0-7]{1,3})|[xX]([0-9a-fA-F]{1,2})|(.))", re.DOTALL)


def _unescape(body: str, line: int, column: int) -> str:
    def one(m: re.Match[str]) -> str:
        if m.group(1):
            return chr(int(m.group(1), 8))
        if m.group(2):
            return chr(int(m.group(2), 16))
        char = m.group(3)
        if char in _ESCAPES:
            return _ESCAPES[char]
        raise PrototxtError(
            f"unknown escape '\\{char}' in a string",
            line,
            column + 1 + m.start(),
            expected="one of \\n \\t \\\\ \\\" \\' or an octal/hex code",
        )

    return _ESCAPE_RE.sub(one, body)


def tokenize(text: str) -> Iterator[Token]:
    """Tokens with 1-based line and column; ends with one ``end`` token."""
    line, line_start, pos = 1, 0, 0
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        column = pos - line_start + 1
        if m is None:
            char = text[pos]
            raise PrototxtError(
                f"unexpected character {char!r}", line, column, expected="a field name, a value, '{', '}' or ':'"
            )
        kind, chunk = m.lastgroup or "", m.group()
        pos = m.end()
        if kind == "newline":
            line, line_start = line + 1, pos
        elif kind in ("space", "comment"):
            pass
        elif kind == "badstring":
            raise PrototxtError(
                "this string is not closed on its line",
                line,
                column,
                expected=f"a closing {chunk} before the line ends",
            )
        elif kind == "string":
            yield Token("string", chunk, line, column, _unescape(chunk[1:-1], line, column))
        else:
            yield Token(kind, chunk, line, column)
    yield Token("end", "", line, pos - line_start + 1)


# ------------------------------------------------------------------------------------------------
# Syntax: fields and values, not yet typed
# ------------------------------------------------------------------------------------------------
@dataclass
class RawScalar:
    kind: str  # string, number, ident
    text: str  # the literal (a number with its sign), or the decoded string
    line: int
    column: int


@dataclass
class RawMessage:
    line: int
    column: int
    fields: list[RawField] = field(default_factory=list)


@dataclass
class RawField:
    name: str
    line: int
    column: int
    value: RawScalar | RawMessage


def _describe(tok: Token) -> str:
    if tok.kind == "end":
        return "the end of the text"
    if tok.kind == "string":
        return f"the string {tok.text}"
    return f"'{tok.text}'"


class _Reader:
    def __init__(self, text: str) -> None:
        self.tokens = list(tokenize(text))
        self.pos = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.pos]

    def take(self) -> Token:
        tok = self.tokens[self.pos]
        if tok.kind != "end":
            self.pos += 1
        return tok

    def is_punct(self, chars: str) -> bool:
        return self.tok.kind == "punct" and self.tok.text in chars

    def fail(self, expected: str, tok: Token | None = None) -> NoReturn:
        tok = tok or self.tok
        raise PrototxtError(f"expected {expected}, found {_describe(tok)}", tok.line, tok.column, expected=expected)

    def message_body(self, closer: str, opener: Token | None, depth: int) -> list[RawField]:
        if depth > MAX_DEPTH:
            assert opener is not None
            raise PrototxtError(
                f"messages nested more than {MAX_DEPTH} deep",
                opener.line,
                opener.column,
                kind="structure",
                expected="fewer nested messages",
            )
        fields: list[RawField] = []
        while True:
            tok = self.tok
            if tok.kind == "end":
                if closer:
                    assert opener is not None
                    self.fail(f"'{closer}' to close the '{opener.text}' of line {opener.line}")
                return fields
            if tok.kind == "punct" and tok.text == closer:
                self.take()
                return fields
            if tok.kind == "punct" and tok.text == "[":
                raise PrototxtError(
                    "extension fields ([...]) are not used by Caffe networks",
                    tok.line,
                    tok.column,
                    kind="unknown_field",
                    expected="a field name",
                )
            if tok.kind != "ident":
                what = f"a field name or '{closer}'" if closer else "a field name"
                self.fail(what)
            fields.extend(self.field(depth))
            if self.is_punct(";,"):
                self.take()

    def field(self, depth: int) -> list[RawField]:
        name = self.take()
        if self.is_punct(":"):
            self.take()
            if self.is_punct("{<"):
                return [self.message(name, depth)]
            if self.is_punct("["):
                return self.listing(name, depth)
            return [RawField(name.text, name.line, name.column, self.scalar())]
        if self.is_punct("{<"):
            return [self.message(name, depth)]
        self.fail(f"':' or '{{' after the field name '{name.text}'")

    def message(self, name: Token, depth: int) -> RawField:
        opener = self.take()
        closer = "}" if opener.text == "{" else ">"
        body = self.message_body(closer, opener, depth + 1)
        return RawField(name.text, name.line, name.column, RawMessage(opener.line, opener.column, body))

    def listing(self, name: Token, depth: int) -> list[RawField]:
        opener = self.take()
        out: list[RawField] = []
        if self.is_punct("]"):
            self.take()
            return out
        while True:
            if self.is_punct("{<"):
                item = self.message(name, depth)
                out.append(RawField(name.text, item.value.line, item.value.column, item.value))
            else:
                value = self.scalar()
                out.append(RawField(name.text, value.line, value.column, value))
            if self.is_punct(","):
                self.take()
                continue
            if self.is_punct("]"):
                self.take()
                return out
            self.fail(f"',' or ']' in the list opened on line {opener.line}")

    def scalar(self) -> RawScalar:
        tok = self.tok
        if tok.kind == "string":
            parts = []
            while self.tok.kind == "string":
                parts.append(self.take().value)
            return RawScalar("string", "".join(parts), tok.line, tok.column)
        sign = ""
        if self.is_punct("-"):
            self.take()
            sign = "-"
            if self.tok.kind not in ("number", "ident"):
                self.fail("a number after '-'")
        value = self.tok
        if value.kind == "number":
            self.take()
            return RawScalar("number", sign + value.text, tok.line, tok.column)
        if value.kind == "ident":
            self.take()
            return RawScalar("ident", sign + value.text, tok.line, tok.column)
        self.fail("a value (a number, a quoted string, true/false or a name) or '{'")


def read_text(text: str) -> RawMessage:
    """Syntax only: the fields of the text, untyped."""
    if not isinstance(text, str):
        raise PrototxtError("the network text must be text", 1, 1, expected="a string")
    if len(text) > MAX_TEXT:
        raise PrototxtError(
            f"the network text is longer than {MAX_TEXT:,} characters",
            1,
            1,
            kind="structure",
            expected="a shorter text",
        )
    reader = _Reader(text)
    return RawMessage(1, 1, reader.message_body("", None, 0))


# ------------------------------------------------------------------------------------------------
# Schema: typed messages
# ------------------------------------------------------------------------------------------------
@dataclass
class Node:
    """One occurrence of a field: its value and where the field's name and value stand."""

    value: Any
    line: int  # the field name
    column: int
    value_line: int
    value_column: int


class Msg:
    """A message checked against the schema; absent fields read as Caffe's defaults."""

    def __init__(self, type_name: str, line: int, column: int, present: bool = True) -> None:
        self.type_name = type_name
        self.line = line
        self.column = column
        self.present = present  # False: absent from the text, read for its defaults
        self.fields: dict[str, list[Node]] = {}

    @property
    def schema(self) -> dict[str, Field]:
        return MESSAGES[self.type_name]

    def has(self, name: str) -> bool:
        return name in self.fields

    def get(self, name: str, default: Any = None) -> Any:
        """A singular field's value, else ``default`` if given, else the schema's default."""
        nodes = self.fields.get(name)
        if nodes:
            return nodes[-1].value
        if default is not None:
            return default
        spec = self.schema[name]
        if spec.kind == "message":
            return Msg(spec.message, self.line, self.column, present=False)
        return spec.default

    def all(self, name: str) -> list[Any]:
        return [n.value for n in self.fields.get(name, [])]

    def nodes(self, name: str) -> list[Node]:
        return self.fields.get(name, [])

    def where(self, name: str | None = None, index: int = 0, value: bool = False) -> tuple[int, int]:
        """Line and column of a field (its value with ``value=True``), else of the message itself."""
        nodes = self.fields.get(name or "", [])
        if nodes:
            node = nodes[min(index, len(nodes) - 1)]
            return (node.value_line, node.value_column) if value else (node.line, node.column)
        return self.line, self.column

    def fail(self, message: str, name: str | None = None, *, kind: str, expected: str = "", index: int = 0) -> NoReturn:
        line, column = self.where(name, index)
        raise PrototxtError(message, line, column, kind=kind, expected=expected)

    def __repr__(self) -> str:
        return f"Msg({self.type_name}, {sorted(self.fields)})"


def _value_error(raw: RawScalar, spec: Field, name: str, detail: str = "") -> NoReturn:
    got = f'"{raw.text}"' if raw.kind == "string" else raw.text
    message = f"{name} takes {spec.type_name}, not {got}"
    if detail:
        message += f" ({detail})"
    raise PrototxtError(message, raw.line, raw.column, kind="value", expected=spec.type_name)


def _int_literal(text: str) -> int | None:
    negative = text.startswith("-")
    body = text[1:] if negative else text
    if not _INT_RE.fullmatch(body):
        return None
    if body.lower().startswith("0x"):
        value = int(body, 16)
    elif len(body) > 1 and body.startswith("0"):
        value = int(body, 8)
    else:
        value = int(body)
    return -value if negative else value


def _float_literal(raw: RawScalar) -> float | None:
    text = raw.text
    negative = text.startswith("-")
    body = text[1:] if negative else text
    if raw.kind == "ident":
        lowered = body.lower()
        if lowered in ("inf", "infinity"):
            return -math.inf if negative else math.inf
        if lowered == "nan":
            return math.nan
        return None
    as_int = _int_literal(text)
    if as_int is not None:
        return float(as_int)
    if not _FLOAT_RE.fullmatch(body):
        return None
    value = float(body.rstrip("fF"))
    return -value if negative else value


def _convert(raw: RawScalar, spec: Field, name: str) -> Any:
    kind = spec.kind
    if kind == "string":
        if raw.kind != "string":
            _value_error(raw, spec, name, 'put it in quotes, e.g. "name"')
        return raw.text
    if raw.kind == "string":
        _value_error(raw, spec, name)
    if kind in INT_RANGES:
        value = _int_literal(raw.text) if raw.kind == "number" else None
        if value is None:
            _value_error(raw, spec, name, "a whole number")
        low, high = INT_RANGES[kind]
        if not low <= value <= high:
            _value_error(raw, spec, name, f"out of range {low}..{high}")
        return value
    if kind == "float":
        fvalue = _float_literal(raw)
        if fvalue is None:
            _value_error(raw, spec, name)
        if not math.isfinite(fvalue) or abs(fvalue) > 3.4e38:
            _value_error(raw, spec, name, "a finite number")
        return fvalue
    if kind == "bool":
        if raw.text in ("true", "True", "t", "1"):
            return True
        if raw.text in ("false", "False", "f", "0"):
            return False
        _value_error(raw, spec, name)
    # enum: a name, or its number
    if raw.kind == "ident" and raw.text in spec.enum:
        return raw.text
    number = _int_literal(raw.text) if raw.kind == "number" else None
    if number is not None and 0 <= number < len(spec.enum):
        return spec.enum[number]
    hint = did_you_mean(raw.text.upper(), spec.enum) if raw.kind == "ident" else ""
    _value_error(raw, spec, name, hint.strip(" ()") if hint else "")


def _typed(raw: RawMessage, type_name: str) -> Msg:
    msg = Msg(type_name, raw.line, raw.column)
    schema = MESSAGES[type_name]
    for f in raw.fields:
        spec = schema.get(f.name)
        if spec is None:
            _unknown_field(f, type_name, schema)
        if not spec.repeated and f.name in msg.fields:
            first = msg.fields[f.name][0]
            raise PrototxtError(
                f"'{f.name}' is given twice in this {type_name} (first on line {first.line}); it takes one value",
                f.line,
                f.column,
                kind="structure",
                expected=f"one '{f.name}'",
            )
        if spec.kind == "message":
            if not isinstance(f.value, RawMessage):
                raise PrototxtError(
                    f"'{f.name}' is a message: write {f.name} {{ ... }}",
                    f.value.line,
                    f.value.column,
                    kind="value",
                    expected="'{'",
                )
            value: Any = _typed(f.value, spec.message)
        else:
            if isinstance(f.value, RawMessage):
                raise PrototxtError(
                    f"'{f.name}' takes {spec.type_name}, not a message",
                    f.value.line,
                    f.value.column,
                    kind="value",
                    expected=spec.type_name,
                )
            value = _convert(f.value, spec, f.name)
        msg.fields.setdefault(f.name, []).append(Node(value, f.line, f.column, f.value.line, f.value.column))
    return msg


def _unknown_field(f: RawField, type_name: str, schema: dict[str, Field]) -> NoReturn:
    if type_name == "NetParameter" and f.name in OLD_NET_FIELDS:
        message = OLD_NET_FIELDS[f.name]
    elif type_name == "LayerParameter" and f.name in CAFFE_ONLY_LAYER_FIELDS:
        message = f"'{f.name}' belongs to a Caffe layer that kiln does not build"
    else:
        message = f"unknown parameter '{f.name}' in {type_name}{did_you_mean(f.name, list(schema))}"
    names = ", ".join(sorted(schema))
    raise PrototxtError(message, f.line, f.column, kind="unknown_field", expected=f"one of: {names}")


def parse_message(text: str, type_name: str = "NetParameter") -> Msg:
    """Parse ``text`` as the named Caffe message."""
    return _typed(read_text(text), type_name)


def parse_net(text: str) -> Msg:
    """Parse a Caffe NetParameter text (a .prototxt network)."""
    return parse_message(text, "NetParameter")

"""The combined query grammar: texts and images added and subtracted, with optional weights.

    query    := [op] term (op term)*
    op       := "+" or "-" with whitespace on both sides (or the query's start/end)
    term     := [weight ":"] body
    weight   := a number above 0, e.g. 2 or 0.5
    body     := "quoted text" | id:RECORD | image path | text

Operators need whitespace around them, so "t-shirt", "-cat" and "a+b" are plain text. Quote a body
that contains " + " or " - " or starts with a number and a colon: "10:30 train" is a text and
"./Trip - Paris/a.jpg" one path. A body (quoted or not) is a record when it starts with "id:",
an image path when it starts with "/", "./", "../" or "~" or ends with an image extension
(.jpg, .png, ...), and a text otherwise.

Parsing is pure; turning terms into one vector (the weighted sum of their normalised
embeddings, renormalised) needs a library and lives in `pixseek.search.query`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

TermKind = Literal["text", "image", "record"]

IMAGE_SUFFIXES = (
    ".jpg",
    ".jpeg",
    ".jpe",
    ".png",
    ".webp",
    ".gif",
    ".bmp",
    ".tif",
    ".tiff",
    ".heic",
    ".heif",
    ".avif",
)
_PATH_PREFIXES = ("/", "./", "../", "~")
_WEIGHT = re.compile(r"(\d+(?:\.\d*)?|\.\d+):")
_OPERATOR = re.compile(r"\s+([+-])(?=\s|$)\s*")
_LEADING_OPERATOR = re.compile(r"\s*([+-])(?:\s+|$)")
_BARE_OPERATOR = re.compile(r"[+-](?:\s|$)")


class QueryError(ValueError):
    """A query that cannot be answered as asked (bad syntax, bad target, empty text)."""


@dataclass(frozen=True)
class Term:
    """One part of a combined query: what to embed, with its sign and weight."""

    kind: TermKind
    value: str
    sign: int = 1
    weight: float = 1.0
    number: int = 1
    column: int = 1
    source: str = ""

    def where(self) -> str:
        """Where the term is in the query, for error messages."""
        return f"term {self.number} at column {self.column} ({self.source!r})"


def parse(query: str) -> list[Term]:
    """The terms of a query, in order; bad syntax raises QueryError naming the column."""
    if not query.strip():
        raise QueryError("the query is empty")
    terms: list[Term] = []
    sign, position = 1, 0
    leading = _LEADING_OPERATOR.match(query)
    if leading:
        sign, position = _sign(leading.group(1)), leading.end()
        if position >= len(query):
            raise _error(query, leading.start(1), f"nothing follows {leading.group(1)!r}")
    while True:
        term, position = _read_term(query, position, sign, len(terms) + 1)
        terms.append(term)
        if position >= len(query):
            return terms
        operator = _OPERATOR.match(query, position)
        assert operator is not None  # a term always ends at an operator or the end
        sign, position = _sign(operator.group(1)), operator.end()
        if position >= len(query):
            raise _error(query, operator.start(1), f"nothing follows {operator.group(1)!r}")


def _sign(operator: str) -> int:
    return 1 if operator == "+" else -1


def _error(query: str, index: int, message: str) -> QueryError:
    return QueryError(f"column {index + 1}: {message}\n  {query}\n  {' ' * index}^")


def _read_term(query: str, position: int, sign: int, number: int) -> tuple[Term, int]:
    while position < len(query) and query[position].isspace():
        position += 1
    start = position
    if _BARE_OPERATOR.match(query, position):
        raise _error(query, position, f"expected a term, found the operator {query[position]!r}")
    weight = 1.0
    weighted = _WEIGHT.match(query, position)
    if weighted:
        weight = float(weighted.group(1))
        if weight <= 0:
            raise _error(query, position, "a weight must be above 0 (use '-' to subtract)")
        position = weighted.end()
    if query.startswith('"', position):
        text, end = _read_quoted(query, position)
    else:
        found = _OPERATOR.search(query, position)
        end = found.start() if found else len(query)
        text = query[position:end].strip()
    kind = _kind_of(text)
    if kind == "record":
        text = text[3:].strip()
    if not text:
        raise _error(query, start, "empty term")
    source = query[start:end].strip()
    return Term(kind, text, sign, weight, number, start + 1, source), end


def _read_quoted(query: str, position: int) -> tuple[str, int]:
    """The text of a quoted body starting at `position`; backslash escapes '"' and '\\'."""
    chars: list[str] = []
    index = position + 1
    while index < len(query):
        char = query[index]
        if char == "\\" and index + 1 < len(query) and query[index + 1] in '"\\':
            chars.append(query[index + 1])
            index += 2
            continue
        if char == '"':
            end = index + 1
            rest = _OPERATOR.search(query, end)
            stop = rest.start() if rest else len(query)
            if query[end:stop].strip():
                raise _error(query, end, "unexpected text after the closing quote")
            return "".join(chars), stop
        chars.append(char)
        index += 1
    raise _error(query, position, "this quote is never closed")


def _kind_of(body: str) -> TermKind:
    if body.startswith("id:"):
        return "record"
    if body.startswith(_PATH_PREFIXES) or body.lower().endswith(IMAGE_SUFFIXES):
        return "image"
    return "text"


def quote(term: Term) -> str:
    """The term written back in query syntax (used to forward a query to a server)."""
    weight = "" if term.weight == 1 else f"{term.weight:g}:"
    body = f"id:{term.value}" if term.kind == "record" else term.value
    if _OPERATOR.search(body) or _WEIGHT.match(body) or body.startswith(('"', "+", "-")):
        body = '"' + body.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return weight + body


def unparse(terms: list[Term]) -> str:
    """A query string that parses back to the same terms."""
    parts = []
    for index, term in enumerate(terms):
        if index or term.sign < 0:
            parts.append("+" if term.sign > 0 else "-")
        parts.append(quote(term))
    return " ".join(parts)

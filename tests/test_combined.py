"""The combined query grammar on its own: what each form parses to, and writing it back."""

from __future__ import annotations

import pytest

from pixseek.search.combined import QueryError, parse, unparse


def shape(query: str) -> list[tuple[str, str, int, float]]:
    return [(term.kind, term.value, term.sign, term.weight) for term in parse(query)]


@pytest.mark.parametrize(
    ("query", "terms"),
    [
        ("a dog on a beach", [("text", "a dog on a beach", 1, 1.0)]),
        ("t-shirt -cat a+b it's", [("text", "t-shirt -cat a+b it's", 1, 1.0)]),
        (
            "2:golden retriever + ./pool.jpg - fruit",
            [
                ("text", "golden retriever", 1, 2.0),
                ("image", "./pool.jpg", 1, 1.0),
                ("text", "fruit", -1, 1.0),
            ],
        ),
        ("0.5:id:abc123 + ~/a.HEIC", [("record", "abc123", 1, 0.5), ("image", "~/a.HEIC", 1, 1.0)]),
        ('"10:30 train" - "a + b"', [("text", "10:30 train", 1, 1.0), ("text", "a + b", -1, 1.0)]),
        ('"./Trip - Paris/a.jpg"', [("image", "./Trip - Paris/a.jpg", 1, 1.0)]),
        ('3:"say \\"cheese\\""', [("text", 'say "cheese"', 1, 3.0)]),
        ("- night", [("text", "night", -1, 1.0)]),
    ],
)
def test_query_forms(query, terms):
    assert shape(query) == terms


def test_columns_point_at_each_term():
    terms = parse("a cat  +  2:id:x - ./b.png")
    assert [(term.number, term.column, term.source) for term in terms] == [
        (1, 1, "a cat"),
        (2, 11, "2:id:x"),
        (3, 20, "./b.png"),
    ]
    assert terms[1].where() == "term 2 at column 11 ('2:id:x')"


@pytest.mark.parametrize(
    "query",
    [
        "a dog",
        '2:golden retriever + "a + b" - ./Trip - Paris.jpg',
        '- "10:30" + 0.5:id:abc + "say \\"hi\\" \\\\ bye" + "+x" + -y',
    ],
)
def test_writing_terms_back_parses_to_the_same_terms(query):
    terms = parse(query)
    again = parse(unparse(terms))
    assert [(t.kind, t.value, t.sign, t.weight) for t in again] == [
        (t.kind, t.value, t.sign, t.weight) for t in terms
    ]


@pytest.mark.parametrize(
    ("query", "column"),
    [("", None), ("   ", None), ("+", 1), ("a +  ", 3), ('a + "b', 5), ("a + 0.0:b", 5)],
)
def test_syntax_errors_name_a_column(query, column):
    with pytest.raises(QueryError) as error:
        parse(query)
    message = str(error.value)
    assert (f"column {column}:" in message) if column else message == "the query is empty"

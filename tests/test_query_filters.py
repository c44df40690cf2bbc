"""Combined queries, filters, minimum score and date order through the CLI, on real indexed images.

The gallery holds every colour and shape three times, in different folders, formats, sizes and
dates, and the trained tiny CLIP gives the queries meaning.
"""

from __future__ import annotations

import datetime as dt
import os
import random
from pathlib import Path

import pytest
import yaml
from PIL import Image

from pixseek.catalog import FileRow, record_id
from pixseek.config import load_config
from pixseek.library import Library
from pixseek.search.filters import parse_filters
from pixseek.search.query import Page, search
from pixseek.search.ranking import rank
from tests.conftest import Cli, write_config
from tests.tinyclip import classes, draw_shape

# (folder, extension, size, date, date kept in EXIF?) for the three copies of each class
COPIES = (
    ("2019", "jpg", (128, 128), dt.datetime(2019, 6, 1, 10), True),
    ("2023/summer", "png", (256, 192), dt.datetime(2023, 7, 1, 10), False),
    ("2023", "webp", (96, 96), dt.datetime(2024, 1, 1, 10), False),
)
FLAGGED_COLOUR = "yellow"


def build_dated_gallery(base: Path, model: Path) -> tuple[Path, Path]:
    """Index 36 images (12 classes x 3 copies); returns (config file, gallery root).

    Each class's copies are a day apart within their month, so dates are all distinct. JPEGs
    carry their date in EXIF and get a misleading mtime; the others only have their mtime.
    """
    root = base / "gallery"
    rng = random.Random(11)
    for index, (colour, shape) in enumerate(classes()):
        for number, (folder, extension, size, when, in_exif) in enumerate(COPIES):
            path = root / folder / f"{colour}_{shape}_{number}.{extension}"
            path.parent.mkdir(parents=True, exist_ok=True)
            image = draw_shape(colour, shape, max(size), rng).resize(size)
            moment = when + dt.timedelta(days=index)
            stamp = moment.replace(tzinfo=dt.timezone.utc).timestamp()
            if in_exif:
                exif = Image.Exif()
                exif[0x0132] = moment.strftime("%Y:%m:%d %H:%M:%S")
                image.save(path, quality=90, exif=exif)
                stamp = dt.datetime(2001, 1, 1, tzinfo=dt.timezone.utc).timestamp()
            else:
                image.save(path)
            os.utime(path, (stamp, stamp))
    config = write_config(base / "config.yaml", model, base / "data")
    assert Cli(config).index(root)["added"] == 3 * len(classes())
    return config, root


def flag_colour(config: Path, colour: str) -> None:
    """Mark every image of a colour flagged, as a moderation label set would."""
    library = Library(load_config(config).settings)
    try:
        rows = library.catalog.indexed(library.model_key)
        chosen = [row.content_hash for row in rows if Path(row.path).name.startswith(colour)]
        with library.catalog.db as db:
            db.executemany(
                "INSERT INTO tags VALUES (?, ?, 'moderation', 'nsfw', 0.9, 1)",
                [(library.model_key, key) for key in chosen],
            )
    finally:
        library.close()


@pytest.fixture(scope="module")
def dated(tmp_path_factory, trained_clip) -> tuple[Cli, Path, Path]:
    base = tmp_path_factory.mktemp("dated")
    config, root = build_dated_gallery(base, trained_clip)
    flag_colour(config, FLAGGED_COLOUR)
    return Cli(config), root, config


def names(hits: list[dict]) -> list[str]:
    return [Path(hit["path"]).name for hit in hits]


def label(name: str) -> str:
    return "_".join(Path(name).stem.split("_")[:2])


def everything(cli: Cli, *args: str) -> list[dict]:
    return cli.json("search", "a red circle", "-k", "100", *args)


# ----------------------------------------------------------------------------- combined queries


def test_adding_and_subtracting_the_same_text_is_the_plain_query(dated):
    cli, _, _ = dated
    plain = cli.json("search", "a red circle", "-k", "8")
    combined = cli.json("search", "a red circle + a blue square - a blue square", "-k", "8")
    assert names(combined) == names(plain)
    assert [hit["score"] for hit in combined] == pytest.approx([h["score"] for h in plain], 1e-4)
    assert [label(name) for name in names(plain)[:3]] == ["red_circle"] * 3


def test_weights_pull_the_ranking_towards_a_term(dated):
    cli, _, _ = dated

    def top3(*query: str) -> list[str]:
        return [label(n) for n in names(cli.json("search", *query, "-k", "3"))]

    assert top3("4:a red circle + a green triangle") == ["red_circle"] * 3
    assert top3("a red circle + 4:a green triangle") == ["green_triangle"] * 3
    assert top3("0.25:a green triangle + a red circle") == ["red_circle"] * 3
    # the shell form of the same query: one argument per term and operator
    assert top3("4:a red circle", "+", "a green triangle") == ["red_circle"] * 3


def test_minus_pushes_a_class_down(dated):
    cli, _, _ = dated
    plain = names(cli.json("search", "a blue circle", "-k", "12"))
    minus = names(cli.json("search", "a blue circle - a blue square", "-k", "12"))
    assert sum(label(n) == "blue_square" for n in minus) < sum(
        label(n) == "blue_square" for n in plain
    )


def test_image_terms_by_path_and_by_id_leave_themselves_out(dated, tmp_path):
    cli, root, _ = dated
    target = root / "2019" / "green_square_0.jpg"
    by_path = cli.json("search", str(target), "-k", "3")
    by_id = cli.json("search", f"id:{record_id(str(root), '2019/green_square_0.jpg')}", "-k", "3")
    assert names(by_path) == names(by_id)
    assert target.name not in names(by_path)
    assert [label(n) for n in names(by_path)[:2]] == ["green_square"] * 2
    outside = tmp_path / "query image.png"  # not indexed: embedded on the fly
    draw_shape("blue", "triangle", 160, random.Random(3)).save(outside)
    hits = cli.json("search", f'"{outside}" + a blue triangle', "-k", "3")
    assert all(label(n) == "blue_triangle" for n in names(hits))


def test_image_plus_text_moves_towards_the_text(dated):
    cli, root, _ = dated
    square = root / "2019" / "red_square_0.jpg"
    alone = names(cli.json("search", str(square), "-k", "6"))
    mixed = names(cli.json("search", f"{square} + 2:a red circle", "-k", "6"))
    assert sum(label(n) == "red_circle" for n in mixed) > sum(
        label(n) == "red_circle" for n in alone
    )


def test_hyphenated_and_quoted_texts_are_plain_texts(dated):
    cli, _, _ = dated
    assert len(cli.json("search", "a t-shirt", "-k", "2")) == 2
    quoted = cli.json("search", '"a red circle - a blue square"', "-k", "3")
    assert len(quoted) == 3


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ('"a red circle', 'column 1: this quote is never closed\n  "a red circle\n  ^'),
        ("a red circle + + a cat", "column 16: expected a term, found the operator '+'"),
        ("a red circle -", "column 14: nothing follows '-'"),
        ("0:a red circle", "column 1: a weight must be above 0"),
        ('"red"s + a cat', "column 6: unexpected text after the closing quote"),
        ("a cat + id:nope", "term 2 at column 9 ('id:nope'): no indexed image has this id"),
        ("a cat - ./missing.jpg", "term 2 at column 9 ('./missing.jpg'): no such image file"),
        ("a red circle - a red circle", "the terms cancel out"),
    ],
)
def test_bad_queries_point_at_the_bad_term(dated, query, message):
    cli, _, _ = dated
    assert message in cli.run("search", query, expect=2)


# ----------------------------------------------------------------------------- filters


def test_folder_filter_absolute_and_relative(dated):
    cli, root, _ = dated
    summer = everything(cli, "--folder", str(root / "2023" / "summer"))
    assert len(summer) == 12 and all(name.endswith(".png") for name in names(summer))
    assert names(everything(cli, "--folder", "2023/summer")) == names(summer)
    year = everything(cli, "--folder", "2023")  # the folder and everything under it
    assert len(year) == 24 and {Path(n).suffix for n in names(year)} == {".png", ".webp"}
    assert everything(cli, "--folder", "2023/sum") == []  # whole folder names only
    top = cli.json("search", "a red circle", "-k", "1", "--folder", "2023/summer")[0]
    assert Path(top["path"]).name == "red_circle_1.png"


def test_date_filter_uses_exif_then_mtime(dated):
    cli, _, _ = dated
    in_2019 = everything(cli, "--since", "2019", "--until", "2019")
    assert len(in_2019) == 12 and all(name.endswith(".jpg") for name in names(in_2019))
    assert everything(cli, "--until", "2001") == []  # the JPEGs' mtime is not their date
    july = everything(cli, "--since", "2023-07-03", "--until", "2023-07-05")
    assert sorted(names(july)) == sorted(
        f"{colour}_{shape}_1.png" for colour, shape in classes()[2:5]
    )
    later = everything(cli, "--since", "2023-12-31T12:00")
    assert len(later) == 12 and all(name.endswith(".webp") for name in names(later))


def test_format_and_size_filters(dated):
    cli, _, _ = dated
    assert {Path(n).suffix for n in names(everything(cli, "--format", "png,webp"))} == {
        ".png",
        ".webp",
    }
    assert len(everything(cli, "--format", "jpg", "--format", "WEBP")) == 24
    wide = everything(cli, "--min-width", "200")
    assert len(wide) == 12 and all(n.endswith(".png") for n in names(wide))
    tall = everything(cli, "--min-height", "100")
    assert {Path(n).suffix for n in names(tall)} == {".jpg", ".png"}
    assert everything(cli, "--min-height", "193") == []


def test_flagged_filter_and_safe_search_default(dated, tmp_path):
    cli, _, config = dated
    only = everything(cli, "--flagged", "only")
    assert len(only) == 9 and all(n.startswith(FLAGGED_COLOUR) for n in names(only))
    hidden = everything(cli, "--flagged", "hide")
    assert len(hidden) == 27 and not any(n.startswith(FLAGGED_COLOUR) for n in names(hidden))
    assert len(everything(cli)) == 36  # no label set flags: nothing hidden by default
    settings = yaml.safe_load(config.read_text())
    settings["classify"] = {"label_sets": [{"name": "moderation", "labels": ["x"], "flag": True}]}
    safe = Cli(tmp_path / "safe.yaml")
    safe.config.write_text(yaml.safe_dump(settings))
    assert names(everything(safe)) == names(hidden)
    assert len(everything(safe, "--flagged", "any")) == 36


def test_filters_combine_with_each_other_and_with_image_queries(dated):
    cli, root, _ = dated
    hits = cli.json(
        "search",
        str(root / "2019" / "blue_circle_0.jpg"),
        "-k",
        "100",
        "--folder",
        "2023",
        "--since",
        "2023-07",
        "--until",
        "2023-07",
        "--min-width",
        "200",
        "--flagged",
        "hide",
    )
    assert len(hits) == 9 and all(n.endswith("_1.png") for n in names(hits))
    assert label(names(hits)[0]) == "blue_circle"


def test_every_strategy_gives_the_same_filtered_ranking(dated):
    _, _, config = dated
    library = Library(load_config(config).settings)
    try:
        vector = library.embedder.encode_texts(["a green circle"])[0]
        for filters in (
            parse_filters(folder="2023"),
            parse_filters(formats=["png"], min_height=100),
            parse_filters(flagged="hide", since="2019", until="2023-07-06"),
        ):
            exact = rank(library, vector, 10, filters, force="exact")
            fetched = rank(library, vector, 10, filters, force="overfetch")
            assert exact.strategy == "exact" and fetched.strategy == "overfetch"
            assert [i for i, _ in fetched.hits] == [i for i, _ in exact.hits]
            assert rank(library, vector, 10, filters).hits == exact.hits
            found = search(library, "a green circle", Page(k=10), filters)
            assert [result.id for result in found] == [i for i, _ in exact.hits]
    finally:
        library.close()


# ----------------------------------------------------------------------------- cutoff and order


def test_min_score_then_sort_by_date(dated):
    cli, _, _ = dated
    ranked = everything(cli)
    cutoff = ranked[14]["score"] - 1e-6
    by_score = everything(cli, "--min-score", str(cutoff))
    by_date = everything(cli, "--min-score", str(cutoff), "--sort", "date")
    assert len(by_score) >= 15 and all(hit["score"] >= cutoff for hit in by_score)
    assert sorted(names(by_date)) == sorted(names(by_score))
    dates = [hit["date"] for hit in by_date]
    assert dates == sorted(dates, reverse=True) and dates != [h["date"] for h in by_score]
    page = cli.json(
        "search",
        "a red circle",
        "--min-score",
        str(cutoff),
        "--sort",
        "date",
        "-k",
        "5",
        "--offset",
        "5",
    )
    assert names(page) == names(by_date)[5:10]
    text = cli.run("search", "a red circle", "-k", "1", "--sort", "date")
    assert text.split()[1][:4] in ("2019", "2023", "2024")  # score, date, path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "last week"], "since: 'last week' is not a date"),
        (["--until", "2023-13"], "until: '2023-13' is not a date"),
        (["--since", "2024", "--until", "2023"], "must be before until"),
        (["--format", "psd"], "format: unknown format 'PSD'; allowed: JPEG, PNG"),
        (["--flagged", "maybe"], "flagged: 'maybe' is not one of any, only, hide"),
        (["--min-width", "0"], "min_width: must be between 1 and 1000000"),
        (["--sort", "name"], "--sort must be one of score, date"),
    ],
)
def test_bad_filter_values_are_refused_with_the_option_named(dated, args, message):
    cli, _, _ = dated
    assert message in cli.run("search", "a red circle", *args, expect=2)


def test_files_without_an_embedding_for_this_model_are_skipped(cli, gallery):
    """E.g. right after switching model.name, before the new model has embedded everything."""
    cli.index(gallery)
    library = Library(load_config(cli.config).settings)
    try:
        stray = FileRow(
            id="stray", root=str(gallery), rel_path="sub/stray.jpg", path=str(gallery / "sub" /
            "stray.jpg"), size=1, mtime_ns=1, content_hash="0" * 40, status="indexed",
            width=96, height=96, format="JPEG",
        )  # fmt: skip
        library.catalog.save([stray])
    finally:
        library.close()
    for args in (["--folder", "sub"], ["--format", "jpeg"], ["--min-width", "10"]):
        hits = cli.json("search", "a red circle", "-k", "50", *args)
        assert len(hits) == 4 if args[0] == "--folder" else len(hits) == 12
        assert "stray" not in {hit["id"] for hit in hits}

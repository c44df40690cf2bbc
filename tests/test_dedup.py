"""`pixseek dedup` on a real indexed library: tiers, keepers, quarantine and undo, decisions."""

from __future__ import annotations

import csv
import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest
import yaml

from pixseek.config import DedupSettings
from pixseek.search.keepers import Member, choose_keeper
from tests import dedup_gallery as planted
from tests.conftest import Cli, write_config

SEMANTIC_THRESHOLD = "0.9"


@pytest.fixture
def library(tmp_path: Path, trained_clip: Path) -> tuple[Cli, Path]:
    """The planted gallery, indexed with the trained tiny CLIP; returns (cli, root)."""
    root = planted.build(tmp_path / "photos")
    cli = Cli(write_config(tmp_path / "config.yaml", trained_clip, tmp_path / "data"))
    assert cli.index(root)["added"] == 14
    return cli, root


def with_dedup(cli: Cli, **dedup: object) -> Cli:
    """The same library with extra `dedup` settings."""
    data = yaml.safe_load(cli.config.read_text())
    cli.config.write_text(yaml.safe_dump(data | {"dedup": dedup}))
    return cli


def groups_of(cli: Cli, root: Path, *args: str) -> dict[str, list[set[str]]]:
    """Groups per tier as sets of paths relative to the root."""
    report = cli.json("dedup", *args)
    return {
        tier: [{str(Path(m["path"]).relative_to(root)) for m in g["members"]} for g in groups]
        for tier, groups in report["tiers"].items()
    }


def keeper_of(cli: Cli, root: Path, tier: str, member: str) -> str:
    for group in cli.json("dedup", "--tier", tier)["tiers"][tier]:
        paths = {str(Path(m["path"]).relative_to(root)): m for m in group["members"]}
        if member in paths:
            keeper = next(m for m in group["members"] if m["keeper"])
            assert keeper["id"] == group["keeper"]
            return str(Path(keeper["path"]).relative_to(root))
    raise AssertionError(f"{member} is in no {tier} group")


def test_each_tier_finds_its_planted_duplicates_and_nothing_distinct(library):
    cli, root = library
    found = groups_of(cli, root)
    found |= groups_of(cli, root, "--tier", "semantic", "--threshold", SEMANTIC_THRESHOLD)
    assert found["exact"] == [planted.EXACT]
    assert planted.NEAR in found["near"]
    assert not any(group >= planted.EXACT for group in found["near"])  # reported apart
    semantic = [group for group in found["semantic"] if "shapes/red-circle.png" in group]
    assert len(semantic) == 1 and semantic[0] >= planted.SEMANTIC
    distinct = set(planted.DISTINCT_SCENES) | set(planted.DISTINCT_SHAPES)
    for tier, groups in found.items():
        assert not any(group & distinct for group in groups), tier
    assert "shapes/red-circle-crop.jpg" not in set().union(*found["near"])  # a crop is not near


def test_keeper_is_the_full_size_original_and_prefer_paths_wins(library):
    cli, root = library
    assert keeper_of(cli, root, "near", "scenes/scene1-small.jpg") == "scenes/scene1.png"
    assert keeper_of(cli, root, "exact", "scenes/scene0.png") == "scenes/scene0.png"
    with_dedup(cli, prefer_paths=["*/copies/*"])
    assert keeper_of(cli, root, "exact", "scenes/scene0.png") == "scenes/copies/scene0-copy.png"


def member(path: str, **facts: object) -> Member:
    values = dict(
        id=path,
        path=path,
        root="/p",
        rel_path=path.removeprefix("/p/"),
        content_hash=path,
        size=1000,
        mtime_ns=1_600_000_000 * 10**9,  # 2020
        width=100,
        height=100,
        format="JPEG",
        taken_at=None,
    )
    return Member(**values | facts)  # type: ignore[arg-type]


def test_keep_rules_apply_in_the_configured_order():
    big_jpeg = member("/p/big.jpg", width=4000, height=3000)
    small_heic = member("/p/small.heic", format="HEIF", width=2000, height=1500)
    old_copy = member("/p/a/longer/old.jpg", width=4000, height=3000, taken_at=1.0e9)
    group = [big_jpeg, small_heic, old_copy]
    assert choose_keeper(group, DedupSettings()) == old_copy  # pixels tie, format ties, oldest
    by_format = DedupSettings(keep_rules=["format", "largest_pixels"])
    assert choose_keeper(group, by_format) == small_heic  # HEIF before JPEG
    by_path = DedupSettings(keep_rules=["shortest_path"])
    assert choose_keeper(group, by_path) == big_jpeg
    newest = DedupSettings(keep_rules=["largest_pixels", "newest"])
    assert choose_keeper(group, newest) == big_jpeg  # modified 2020; the copy was taken in 2001
    preferred = DedupSettings(prefer_paths=["*.heic"])
    assert choose_keeper(group, preferred) == small_heic
    bigger_file = member("/p/z.jpg", size=5000)
    assert choose_keeper([big_jpeg, bigger_file], DedupSettings(keep_rules=["largest_file"])) == (
        bigger_file
    )


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_quarantine_keeps_the_index_consistent_and_undo_restores_every_byte(library, tmp_path):
    cli, root = library
    before = snapshot(root)
    quarantine = tmp_path / "quarantine"
    report = cli.json("dedup", "--tier", "exact", "--tier", "near", "--move-to", str(quarantine))
    moved = {
        str(Path(entry["original"]).relative_to(root)) for entry in report["quarantine"]["moved"]
    }
    assert moved == {
        "scenes/copies/scene0-copy.png",
        "scenes/scene1-small.jpg",
        "shapes/red-circle-bright.jpg",
    }
    for rel in moved:
        assert not (root / rel).exists()
        kept = quarantine / root.relative_to(root.anchor) / rel  # full path kept under the folder
        assert kept.read_bytes() == before[rel]
    manifest = json.loads(Path(report["quarantine"]["manifest"]).read_text())
    entry = manifest["moved"][0]
    assert {"original", "moved_to", "content_hash", "group", "tier"} <= set(entry)
    assert cli.json("status")["indexed"] == 11  # moved files left the index at once
    again = cli.index(root)
    assert (again["deleted"], again["added"], again["unchanged"]) == (0, 0, 11)
    assert groups_of(cli, root, "--tier", "exact") == {"exact": []}

    restored = cli.json("dedup", "undo", report["quarantine"]["manifest"])
    assert sorted(restored["restored"]) == sorted(str(root / rel) for rel in moved)
    assert snapshot(root) == before
    assert cli.json("status")["indexed"] == 14
    after_undo = cli.index(root)  # rows came back with the files: nothing to decode
    assert (after_undo["added"], after_undo["unchanged"], after_undo["decoded"]) == (0, 14, 0)
    assert groups_of(cli, root, "--tier", "exact") == {"exact": [planted.EXACT]}


def test_undo_never_overwrites_a_different_file(library, tmp_path):
    cli, root = library
    quarantine = tmp_path / "quarantine"
    report = cli.json("dedup", "--tier", "near", "--move-to", str(quarantine))["quarantine"]
    small = root / "scenes/scene1-small.jpg"
    small.write_bytes(b"a new picture that happens to have the same name")
    output = cli.run("dedup", "undo", report["manifest"])
    assert "restored 1 file(s)" in output
    assert "a different file is there now" in output and str(small) in output
    assert small.read_bytes() == b"a new picture that happens to have the same name"
    waiting = next(e for e in report["moved"] if e["original"] == str(small))
    assert Path(waiting["moved_to"]).is_file()  # still safe in quarantine
    assert (root / "shapes/red-circle-bright.jpg").is_file()


def test_protected_paths_are_never_moved(library, tmp_path):
    cli, root = library
    with_dedup(cli, protect_paths=["*/copies/*", "*.jpg"])
    report = cli.json("dedup", "--move-to", str(tmp_path / "q"))
    assert report["quarantine"]["moved"] == []
    reasons = {Path(s["path"]).name: s["reason"] for s in report["quarantine"]["skipped"]}
    assert reasons["scene0-copy.png"] == "protected" and reasons["scene1-small.jpg"] == "protected"
    assert snapshot(root).keys() >= planted.EXACT | planted.NEAR | planted.SEMANTIC
    [group] = report["tiers"]["exact"]
    copy = next(m for m in group["members"] if m["path"].endswith("scene0-copy.png"))
    assert copy["protected"] and not copy["keeper"]


def test_decisions_stick_across_runs_moves_and_bring_back_only_new_pairs(library):
    cli, root = library
    semantic = ("--tier", "semantic", "--threshold", SEMANTIC_THRESHOLD)
    circle = next(
        g for g in cli.json("dedup", *semantic)["tiers"]["semantic"] if len(g["members"]) == 3
    )
    cli.run("dedup", "decide", circle["id"], "--as", "keep_all", *semantic)
    assert not any(
        "shapes/red-circle.png" in g for g in groups_of(cli, root, *semantic)["semantic"]
    )
    assert any("shapes/red-circle.png" in g for g in groups_of(cli, root, "--tier", "near")["near"])

    (root / "edits").mkdir()
    shutil.move(root / "shapes/red-circle-crop.jpg", root / "edits/crop.jpg")
    assert cli.index(root)["moved"] == 1
    assert not any("edits/crop.jpg" in g for g in groups_of(cli, root, *semantic)["semantic"])

    shutil.copyfile(root / "shapes/red-circle.png", root / "edits/circle.png")  # an exact copy
    planted.scene(1).crop((8, 8, 312, 232)).save(root / "edits/scene1-crop.png")
    cli.index(root)
    regrouped = groups_of(cli, root, *semantic)["semantic"]
    assert not any("shapes/red-circle.png" in g for g in regrouped)  # same content, same decision
    newcomer = next(g for g in regrouped if "edits/scene1-crop.png" in g)
    assert "scenes/scene1.png" in newcomer  # a new content brings its own pairs


def test_new_content_joining_a_decided_group_brings_back_only_its_pairs(library):
    cli, root = library
    near = ("--tier", "near")
    [group] = [
        g
        for g in cli.json("dedup", *near)["tiers"]["near"]
        if len(g["members"]) == 2
        and g["members"][0]["path"].endswith(("scene1.png", "scene1-small.jpg"))
    ]
    cli.run("dedup", "decide", group["id"], "--as", "not_duplicates", *near)
    assert planted.NEAR not in groups_of(cli, root, *near)["near"]
    planted.scene(1).resize((240, 180)).save(root / "scenes/scene1-medium.jpg", quality=70)
    cli.index(root)
    [back] = [g for g in groups_of(cli, root, *near)["near"] if "scenes/scene1-medium.jpg" in g]
    assert back == planted.NEAR | {"scenes/scene1-medium.jpg"}
    reports = cli.json("dedup", *near)["tiers"]["near"]
    assert group["id"] not in {g["id"] for g in reports}  # a new group, with the newcomer's pairs


def test_csv_and_json_name_every_member_and_its_role(library, tmp_path):
    cli, root = library
    table = tmp_path / "dups.csv"
    report = cli.json("dedup", "--csv", str(table))
    rows = list(csv.DictReader(table.open()))
    assert {row["tier"] for row in rows} == {"exact", "near", "semantic"}
    assert len(rows) == sum(len(g["members"]) for gs in report["tiers"].values() for g in gs)
    exact = [row for row in rows if row["tier"] == "exact"]
    assert {row["role"] for row in exact} == {"keeper", "duplicate"}
    assert {Path(row["path"]).relative_to(root).as_posix() for row in exact} == planted.EXACT
    assert all(row["content_hash"] == exact[0]["content_hash"] for row in exact)
    text = cli.run("dedup", "--tier", "exact")
    assert "exact: 1 group(s), 1 file(s) to move" in text and "keep" in text


def test_bad_arguments_get_clear_errors_and_change_nothing(library, tmp_path):
    cli, root = library
    before = snapshot(root)
    checks = [
        (("dedup", "--tier", "exact", "--threshold", "3"), "exact tier has no threshold"),
        (("dedup", "--tier", "near", "--threshold", "2.5"), "number of bits"),
        (("dedup", "--tier", "semantic", "--threshold", "1.5"), "cosine"),
        (("dedup", "--threshold", "0.9"), "exactly one --tier"),
        (("dedup", "--move-to", str(root / "dups")), "inside the library"),
        (("dedup", "undo", str(tmp_path / "missing.json")), "no manifest"),
        (("dedup", "undo", str(root / "scenes/scene0.png")), "not a pixseek dedup manifest"),
        (("dedup", "--sweep", "--tier", "near", "--thresholds", "2,x"), "--thresholds"),
        (("dedup", "decide", "nope", "--as", "keep_all", "--tier", "near"), "no current near"),
    ]
    for args, message in checks:
        assert message in cli.run(*args, expect=2), args
    assert snapshot(root) == before


def test_sweep_and_outliers_describe_a_dataset(library):
    cli, root = library
    rows = cli.json("dedup", "--sweep", "--tier", "semantic", "--thresholds", "0.8,0.9,0.99")
    assert [row["threshold"] for row in rows] == [0.8, 0.9, 0.99]
    removed = [row["files_removed"] for row in rows]
    assert removed == sorted(removed, reverse=True) and removed[-1] >= 1
    at_09 = cli.json("dedup", "--tier", "semantic", "--threshold", "0.9")["tiers"]["semantic"]
    assert rows[1]["groups"] == len(at_09)
    assert rows[1]["files_removed"] == sum(len(g["members"]) - 1 for g in at_09)
    near = cli.json("dedup", "--sweep", "--tier", "near")
    assert [row["threshold"] for row in near][:2] == [0, 2]
    outliers = cli.json("dedup", "--outliers", "3")
    assert {Path(o["path"]).relative_to(root).as_posix() for o in outliers} == set(
        planted.DISTINCT_SHAPES
    )


def test_perceptual_hashes_of_older_files_are_computed_once(library, tmp_path):
    cli, root = library
    catalog = tmp_path / "data" / "catalog.sqlite3"
    with sqlite3.connect(catalog) as db:
        assert db.execute("SELECT COUNT(*) FROM phashes").fetchone()[0] == 13  # from indexing
        db.execute("DELETE FROM phashes")  # as if indexed before pHashes were stored
    assert planted.NEAR in groups_of(cli, root, "--tier", "near")["near"]
    with sqlite3.connect(catalog) as db:
        assert db.execute("SELECT COUNT(*) FROM phashes").fetchone()[0] == 13
    small = root / "scenes/scene1-small.jpg"
    stat = small.stat()
    small.write_bytes(b"\0" * stat.st_size)  # unreadable now, same size and mtime
    os.utime(small, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert planted.NEAR in groups_of(cli, root, "--tier", "near")["near"]  # not read again

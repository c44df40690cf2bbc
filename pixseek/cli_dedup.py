"""`pixseek dedup`: duplicate groups per tier, quarantine with undo, decisions, dataset mode."""

from __future__ import annotations

import csv
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pixseek.cli_support import ConfigOpt, DataDirOpt, JsonOpt, ModelOpt, err, open_library, out
from pixseek.cli_support import settings as load_settings

if TYPE_CHECKING:
    from pixseek.search.dedup import Group

SWEEPS = {
    "near": [0, 2, 4, 6, 8, 10, 12],
    "semantic": [0.8, 0.85, 0.9, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99],
}
CSV_FIELDS = [
    "tier",
    "group",
    "score",
    "role",
    "path",
    "id",
    "content_hash",
    "size",
    "width",
    "height",
    "format",
]


class TierName(str, Enum):
    exact = "exact"
    near = "near"
    semantic = "semantic"


class Verdict(str, Enum):
    keep_all = "keep_all"
    not_duplicates = "not_duplicates"


TierOpt = Annotated[
    list[TierName] | None,
    typer.Option("--tier", help="Tier(s) to report (repeatable); default: all three."),
]
ThresholdOpt = Annotated[
    float | None,
    typer.Option(
        "--threshold", help="near: max differing pHash bits; semantic: min cosine (one --tier)."
    ),
]

dedup_app = typer.Typer(
    help="Find duplicate images: exact, near-exact and semantic groups, each with a keeper."
)


@dedup_app.callback(invoke_without_command=True)
def dedup(
    ctx: typer.Context,
    tier: TierOpt = None,
    threshold: ThresholdOpt = None,
    csv_file: Annotated[
        Path | None, typer.Option("--csv", help="Also write one row per file to this CSV.")
    ] = None,
    move_to: Annotated[
        Path | None,
        typer.Option("--move-to", help="Quarantine non-keepers here (never deletes); manifest."),
    ] = None,
    sweep: Annotated[
        bool, typer.Option("--sweep", help="Groups and files removed per threshold.")
    ] = False,
    thresholds: Annotated[
        str | None, typer.Option("--thresholds", help="Sweep these, comma-separated.")
    ] = None,
    outliers: Annotated[
        int | None, typer.Option("--outliers", min=1, help="List the N most isolated images.")
    ] = None,
    config: ConfigOpt = None,
    json_output: JsonOpt = False,
    model: ModelOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Report duplicate groups per tier, with a suggested keeper for each group."""
    if ctx.invoked_subcommand:
        return
    from pixseek.indexer.quarantine import QuarantineError, quarantine
    from pixseek.search.dedup import DedupError, Finder

    tiers = [t.value for t in tier] if tier else ["exact", "near", "semantic"]
    if threshold is not None and len(tiers) != 1:
        _fail("--threshold needs exactly one --tier (near or semantic)")
    loaded = load_settings(config, **{"model.name": model, "data_dir": data_dir})
    with open_library(loaded, writer=move_to is not None) as library:
        finder = Finder(library)
        try:
            if sweep:
                _print_sweep(finder, tier[0].value if tier else "semantic", thresholds, json_output)
                return
            if outliers:
                _print_outliers(finder, outliers, json_output)
                return
            found = {name: finder.groups(name, threshold) for name in tiers}  # type: ignore[arg-type]
            report = None
            if move_to is not None:
                chosen = _distinct_groups(found)
                report = quarantine(library, chosen, move_to)
        except (DedupError, QuarantineError) as error:
            _fail(str(error))
    if csv_file is not None:
        _write_csv(csv_file, found)
    _print_groups(found, report, json_output)


@dedup_app.command("undo")
def undo(
    manifest: Annotated[Path, typer.Argument(help="A manifest written by --move-to.")],
    config: ConfigOpt = None,
    json_output: JsonOpt = False,
    data_dir: DataDirOpt = None,
) -> None:
    """Put every quarantined file of a manifest back, byte for byte (never overwrites)."""
    from pixseek.indexer.quarantine import QuarantineError
    from pixseek.indexer.quarantine import undo as run_undo

    loaded = load_settings(config, data_dir=data_dir)
    with open_library(loaded, writer=True) as library:
        try:
            report = run_undo(library, manifest)
        except QuarantineError as error:
            _fail(str(error))
    if json_output:
        out.print_json(data=report.as_dict())
        return
    out.print(f"restored {len(report.restored)} file(s)", highlight=False)
    for skipped in report.skipped:
        err.print(f"not restored {skipped['path']}: {skipped['reason']}", markup=False)


@dedup_app.command("decide")
def decide(
    groups: Annotated[list[str], typer.Argument(help="Group ids, as printed by pixseek dedup.")],
    verdict: Annotated[Verdict, typer.Option("--as", help="The decision to remember.")],
    tier: Annotated[TierName, typer.Option("--tier", help="The groups' tier.")],
    threshold: ThresholdOpt = None,
    config: ConfigOpt = None,
    json_output: JsonOpt = False,
    data_dir: DataDirOpt = None,
) -> None:
    """Remember "keep all" or "not duplicates" for groups: they stop coming back."""
    from pixseek.search import decisions
    from pixseek.search.dedup import DedupError, Finder

    loaded = load_settings(config, data_dir=data_dir)
    with open_library(loaded) as library:
        finder = Finder(library)
        try:
            current = {group.id: group for group in finder.groups(tier.value, threshold)}
        except DedupError as error:
            _fail(str(error))
        unknown = [group for group in groups if group not in current]
        if unknown:
            _fail(f"no current {tier.value} group with id {', '.join(unknown)}")
        for group in groups:
            decisions.record(library.catalog, tier.value, verdict.value, current[group].hashes)
    if json_output:
        out.print_json(data={"decided": groups, "decision": verdict.value})
    else:
        out.print(f"{verdict.value}: {len(groups)} group(s) will not be reported again")


def _fail(message: str) -> None:
    err.print(f"error: {message}", highlight=False, markup=False)
    raise typer.Exit(2)


def _distinct_groups(found: dict[str, list[Group]]) -> list[Group]:
    """Groups of every tier asked for, minus those that would move a file another group keeps
    or moves already (a file can be in an exact and a semantic group at once)."""
    moved: set[str] = set()
    kept: set[str] = set()
    chosen = []
    for groups in found.values():
        for group in groups:
            removable = {m.id for m in group.removable}
            if removable & (moved | kept) or group.keeper.id in moved:
                continue
            chosen.append(group)
            moved |= removable
            kept |= {m.id for m in group.members} - removable
    return chosen


def _role(group: Group, member_id: str) -> str:
    if member_id == group.keeper.id:
        return "keeper"
    return "protected" if member_id in group.protected else "duplicate"


def _write_csv(path: Path, found: dict[str, list[Group]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, CSV_FIELDS)
        writer.writeheader()
        for tier, groups in found.items():
            for group in groups:
                for m in group.members:
                    writer.writerow(
                        {
                            "tier": tier,
                            "group": group.id,
                            "score": round(group.score, 6),
                            "role": _role(group, m.id),
                            "path": m.path,
                            "id": m.id,
                            "content_hash": m.content_hash,
                            "size": m.size,
                            "width": m.width,
                            "height": m.height,
                            "format": m.format,
                        }
                    )


def _print_groups(found: dict[str, list[Group]], report, json_output: bool) -> None:
    if json_output:
        data: dict[str, object] = {
            "tiers": {tier: [g.as_dict() for g in groups] for tier, groups in found.items()}
        }
        if report is not None:
            data["quarantine"] = report.as_dict()
        out.print_json(data=data)
        return
    for tier, groups in found.items():
        files = sum(len(g.removable) for g in groups)
        megabytes = sum(g.reclaimable_bytes for g in groups) / 1e6
        out.print(
            f"[bold]{tier}[/]: {len(groups)} group(s), {files} file(s) to move "
            f"({megabytes:.1f} MB)",
            highlight=False,
        )
        for group in groups:
            out.print(f"  group {group.id}  score {group.score:.4g}", highlight=False)
            for m in group.members:
                mark = {"keeper": "keep", "protected": "prot", "duplicate": "    "}
                out.print(
                    f"    {mark[_role(group, m.id)]}  {m.path}", highlight=False, markup=False
                )
    if report is not None:
        out.print(f"moved {len(report.moved)} file(s); manifest {report.manifest}", highlight=False)
        for skipped in report.skipped:
            err.print(f"not moved {skipped['path']}: {skipped['reason']}", markup=False)


def _print_sweep(finder, tier: str, thresholds: str | None, json_output: bool) -> None:
    from pixseek.search.dedup import DedupError

    if tier == "exact":
        raise DedupError("--sweep needs --tier near or semantic")
    try:
        values = [float(v) for v in thresholds.split(",")] if thresholds else SWEEPS[tier]
    except ValueError:
        raise DedupError(
            f"--thresholds must be numbers separated by commas: {thresholds}"
        ) from None
    rows = finder.sweep(tier, values)
    if json_output:
        out.print_json(data=[vars(row) | {"tier": tier} for row in rows])
        return
    out.print(f"{tier}: threshold  groups  files removed", highlight=False)
    for row in rows:
        out.print(
            f"  {row.threshold:>9g}  {row.groups:>6}  {row.files_removed:>13}", highlight=False
        )


def _print_outliers(finder, count: int, json_output: bool) -> None:
    rows = finder.outliers(count)
    if json_output:
        out.print_json(data=[vars(row) for row in rows])
        return
    out.print("mean cosine to the 5 nearest images, lowest first", highlight=False)
    for row in rows:
        out.print(f"  {row.similarity:.4f}  {row.path}", highlight=False, markup=False)

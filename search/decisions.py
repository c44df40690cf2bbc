"""Decisions about duplicate groups that must stick: "keep all" and "not duplicates".

A decision is stored with the tier it was made in and the set of content hashes of the group
(content, not paths, so moving or renaming files keeps it). It silences every pair *inside* that
set, in its tier and in the looser tiers after it (a "keep all" on near-exact copies also holds
for the semantic tier; a "not duplicates" on a semantic group does not hide exact copies in it).
When new content joins the group later, only the pairs that involve the newcomers come back.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from pixseek.catalog import Catalog

TIERS = ("exact", "near", "semantic")
Tier = Literal["exact", "near", "semantic"]
Decision = Literal["keep_all", "not_duplicates"]
DECISIONS: tuple[Decision, ...] = ("keep_all", "not_duplicates")


@dataclass(frozen=True)
class StoredDecision:
    """One decision as stored in the catalog."""

    id: int
    tier: Tier
    decision: Decision
    hashes: frozenset[str]
    created_at: float


def record(catalog: Catalog, tier: Tier, decision: Decision, hashes: Iterable[str]) -> None:
    """Store (or replace) the decision for this set of contents in this tier."""
    key = ",".join(sorted(set(hashes)))
    with catalog.db:
        catalog.db.execute(
            "INSERT INTO dedup_decisions (tier, decision, hashes, created_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (tier, hashes) DO UPDATE SET decision = excluded.decision, "
            "created_at = excluded.created_at",
            (tier, decision, key, time.time()),
        )


def stored(catalog: Catalog) -> list[StoredDecision]:
    """Every decision, oldest first."""
    cursor = catalog.db.execute(
        "SELECT id, tier, decision, hashes, created_at FROM dedup_decisions ORDER BY id"
    )
    return [
        StoredDecision(number, tier, decision, frozenset(hashes.split(",")), created)
        for number, tier, decision, hashes, created in cursor
    ]


def forget(catalog: Catalog, number: int) -> bool:
    """Remove a decision (its groups come back on the next run); False if there was none."""
    with catalog.db:
        return (
            catalog.db.execute("DELETE FROM dedup_decisions WHERE id = ?", (number,)).rowcount > 0
        )


def silencing(catalog: Catalog, tier: Tier) -> list[frozenset[str]]:
    """The content sets whose inner pairs are silenced in `tier`."""
    rank = TIERS.index(tier)
    return [d.hashes for d in stored(catalog) if TIERS.index(d.tier) <= rank]

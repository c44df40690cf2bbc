"""Tags: labels of the configured label sets that an image scored above the threshold for.

Tags are keyed like embeddings, by (model, content hash), so moved and copied files keep them
and a record's tags follow its content. The catalog holds them (table `tags`) together with a
fingerprint, per model, of the label-set configuration that produced them; Chroma gets two
fields derived from them on every record: `flagged` (bool) and `tags` ("set:label,…").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from pixseek.catalog import INDEXED, Catalog, insert_many


@dataclass(frozen=True)
class Tag:
    """One label of one label set, with its probability; `flag` comes from the set."""

    label_set: str
    label: str
    score: float
    flag: bool = False

    @property
    def name(self) -> str:
        """`set:label`, the form used in Chroma metadata and exports."""
        return f"{self.label_set}:{self.label}"


def tag_metadata(tags: Sequence[Tag]) -> dict[str, str | bool]:
    """The Chroma fields for a record's tags; present on every record, tagged or not."""
    return {
        "flagged": any(tag.flag for tag in tags),
        "tags": ",".join(sorted(tag.name for tag in tags)),
    }


class TagTable:
    """Reads and writes tags and tag fingerprints in the catalog's SQLite file."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def for_hashes(self, model: str, hashes: Iterable[str]) -> dict[str, list[Tag]]:
        """Tags per content hash (hashes without tags are absent), best score first."""
        sql = (
            "SELECT content_hash, label_set, label, score, flag FROM tags WHERE model = ? "
            "AND content_hash IN ({}) ORDER BY score DESC"
        )
        found: dict[str, list[Tag]] = {}
        for key, label_set, label, score, flag in self.catalog.execute_in(sql, (model,), hashes):
            found.setdefault(key, []).append(Tag(label_set, label, score, bool(flag)))
        return found

    def replace(self, model: str, tags: Mapping[str, Sequence[Tag]]) -> None:
        """Set the tags of every hash in `tags` (an empty list clears a hash's tags)."""
        db = self.catalog.db
        delete = "DELETE FROM tags WHERE model = ? AND content_hash IN ({})"
        with db:
            list(self.catalog.execute_in(delete, (model,), tags))  # consumed: the deletes run
            insert_many(
                db,
                "INSERT INTO tags VALUES",
                [
                    (model, key, tag.label_set, tag.label, tag.score, int(tag.flag))
                    for key, values in tags.items()
                    for tag in values
                ],
            )

    def fingerprint(self, model: str) -> str | None:
        """The fingerprint of the label sets the stored tags were computed with, if any."""
        found = self.catalog.db.execute(
            "SELECT fingerprint FROM tag_state WHERE model = ?", (model,)
        ).fetchone()
        return found[0] if found else None

    def set_fingerprint(self, model: str, fingerprint: str) -> None:
        """Record that every cached embedding of `model` is tagged with these label sets."""
        with self.catalog.db:
            self.catalog.db.execute(
                "INSERT OR REPLACE INTO tag_state VALUES (?, ?)", (model, fingerprint)
            )

    def counts(self, model: str) -> dict[str, int]:
        """Indexed files per tag (`set:label`), most frequent first."""
        cursor = self.catalog.db.execute(
            "SELECT t.label_set || ':' || t.label, COUNT(*) FROM tags t JOIN files f "
            "ON f.content_hash = t.content_hash WHERE t.model = ? AND f.status = ? "
            "GROUP BY t.label_set, t.label ORDER BY COUNT(*) DESC, 1",
            (model, INDEXED),
        )
        return dict(cursor.fetchall())

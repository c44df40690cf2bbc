"""Perceptual hashes for dedup: read from the catalog, computed once for files indexed without.

New files get their pHash from the decode worker while they are indexed. Files indexed before
that existed get it here, on the first dedup run, from one file of each content, and it is saved
so later runs never read the files again.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pixseek.imaging import ImageError, open_image
from pixseek.library import Library
from pixseek.phash import perceptual_hash
from pixseek.search.keepers import Member

log = logging.getLogger(__name__)
DRAFT_TARGET = 224  # the decode workers' JPEG draft size for CLIP models; pHash looks at 32x32
SAVE_EVERY = 500


def phashes(library: Library, contents: Mapping[str, Sequence[Member]]) -> dict[str, int]:
    """The pHash of every content that can be read, computing and saving the missing ones."""
    known = library.catalog.phashes(contents)
    missing = [key for key in contents if key not in known]
    if not missing:
        return known
    log.info("computing perceptual hashes for %d image(s) indexed without one", len(missing))

    def compute(key: str) -> tuple[str, int | None]:
        for member in contents[key]:
            try:
                image = open_image(Path(member.path), library.limits, DRAFT_TARGET).image
                return key, perceptual_hash(image)
            except ImageError as error:
                log.warning("no perceptual hash for %s: %s", member.path, error.reason)
        return key, None

    fresh: dict[str, int] = {}
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        for key, value in pool.map(compute, missing):
            if value is not None:
                fresh[key] = value
            if len(fresh) >= SAVE_EVERY:
                library.catalog.save_phashes(fresh)
                known |= fresh
                fresh = {}
    library.catalog.save_phashes(fresh)
    return known | fresh

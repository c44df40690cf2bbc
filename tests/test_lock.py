"""One writer per embedded data directory; the lock names its owner and dies with it."""

from __future__ import annotations

import os
from pathlib import Path

from pixseek.lock import WriterLock


def test_second_writer_is_refused_with_the_owner_pid(cli, gallery):
    data_dir = Path(cli.config).parent / "data"
    held = WriterLock(data_dir)
    try:
        output = cli.run("index", str(gallery), expect=1)
        assert f"pid {os.getpid()}" in output and "store.mode: http" in output
        assert cli.json("status")["indexed"] == 0  # readers are not blocked
    finally:
        held.release()
    assert cli.index(gallery)["added"] == 12
    assert cli.index(gallery)["unchanged"] == 12  # the lock was released after each run

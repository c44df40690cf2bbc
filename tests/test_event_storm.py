"""A storm of file events in a watched root: hundreds copied at once, then a fifth moved and a
fifth deleted at once. The index ends up exactly the files on disk, and moves keep embeddings."""

from __future__ import annotations

from tests.bench_scripts import bench_script

event_storm = bench_script("event_storm")


def test_a_storm_of_copies_moves_and_deletes_converges(tmp_path, random_clip):
    options = event_storm.Options(files=300, moves=60, deletes=60, settle_s=0.3, timeout_s=60)
    result = event_storm.run(options, tmp_path, random_clip)
    event_storm.report(result, options)  # shown when the test fails

    assert event_storm.problems(result, options) == []
    assert [phase.on_disk for phase in result.phases] == [300, 240]
    assert result.total("embedded") == 300, "moved files keep their embeddings"
    assert result.total("failed") == 0

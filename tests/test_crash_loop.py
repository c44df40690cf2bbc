"""kill -9 of a real `pixseek serve` at random moments, several times over: nothing is lost,
nothing is duplicated, nothing is embedded twice, and queries only fail while it is down."""

from __future__ import annotations

from tests.bench_scripts import bench_script

crash_loop = bench_script("crash_loop")


def test_serve_survives_a_crash_loop(tmp_path, random_clip):
    options = crash_loop.Options(
        cycles=2, files=100, add=10, lose=4, max_uptime=0.5, startup_kills=0.0, seed=3
    )
    result = crash_loop.run(options, tmp_path, random_clip)
    crash_loop.report(result)  # shown when the test fails

    assert crash_loop.problems(result) == []
    assert result.final["on_disk"] == 120 and result.final["cached"] == 120
    assert result.final["catalog_is_disk"] and result.final["chroma_is_disk"]
    # Chroma lost 4 records on purpose after each kill: the next start's repair put them back
    last = result.cycles[-1]
    assert result.cycles[-2]["lost_on_purpose"] == 4
    assert last["behind_at_start"] >= 4 and last["restored_by_repair"] == last["behind_at_start"]
    assert last["stray"] == 0 and last["behind"] == 0
    assert result.queries_ok > 0 and result.failed_while_up == []
    assert sum(life.embedded for life in result.lives) <= 120

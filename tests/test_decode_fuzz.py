"""Mutated JPEG, PNG, GIF, TIFF and HEIC files through a real `pixseek index`, with the decode
workers and with the batched JPEG path: no crash, every bad file recorded with its reason."""

from __future__ import annotations

import pytest

from tests.bench_scripts import bench_script

decode_fuzz = bench_script("decode_fuzz")


@pytest.mark.parametrize("mode", decode_fuzz.MODES)
def test_mutated_images_are_refused_with_reasons(tmp_path, random_clip, mode):
    options = decode_fuzz.Options(seconds=0.1, per_round=40, seed=4)  # one round
    outcome = decode_fuzz.fuzz(mode, options, tmp_path, random_clip)
    decode_fuzz.report([outcome])  # shown when the test fails

    assert decode_fuzz.problems(outcome) == []
    assert outcome.rounds == 1 and outcome.files == 45 and outcome.exit_codes == [0]
    assert outcome.indexed >= 5 and outcome.failed >= 20  # the controls and many mutants
    assert outcome.indexed + outcome.failed == 45

"""``oct-wsss bench``: every stage timed with repeats, consistent figures, JSON written (a benchmark, not a test)."""

from __future__ import annotations

import json

import pytest
from conftest import tiny_agm_checkpoint

from oct_wsss.cli import main
from oct_wsss.propose.bench import run_bench, table, timed
from oct_wsss.synth import make_volume


def test_timed_counts_repeats_after_warmup() -> None:
    calls = []
    seconds = timed(lambda: calls.append(1), repeats=3, warmup=2)
    assert len(calls) == 5 and len(seconds) == 3 and all(s >= 0 for s in seconds)


def test_bench_times_every_stage_of_student_and_agm(tmp_path) -> None:
    agm = tiny_agm_checkpoint(tmp_path / "agm.safetensors")
    volume = make_volume(0, n_bscans=3, height=96, width=80).volume
    report = run_bench(volume, device="cpu", repeats=2, checkpoints={"agm": agm}, log=lambda _m: None)
    names = [(s["method"], s["name"].split(" (")[0]) for s in report["stages"]]
    assert ("student", "propose volume") in names and ("agm", "GANomaly x̂") in names
    assert {n for m, n in names if m == "agm"} >= {"AGM classification", "GradCAM, no smoothing", "GradCAM, smoothing",
                                                  "refinement", "pseudo-label post-processing", "full proposal"}
    for s in report["stages"]:
        assert len(s["seconds"]) in (1, 2) and s["min_s"] <= s["median_s"] <= s["max_s"]
    assert report["peak_rss_mib"] > 0 and report["peak_gpu_mib"] is None
    assert "GradCAM, smoothing" in table(report)


def test_cli_bench_writes_json_and_refuses_unknown_methods(tmp_path, capsys) -> None:
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--methods", "student", "--repeats", "1", "--device", "cpu",
                 "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["volume"] == [8, 496, 512] and report["machine"]["device"] == "cpu"
    assert main(["bench", "--methods", "dfp-nope", "--quick"]) == 2
    assert "no benchmark for method" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--help"])
def test_bench_has_help(flag: str, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["bench", flag])
    assert "--json" in capsys.readouterr().out

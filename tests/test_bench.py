"""``oct-wsss bench``: every stage timed with repeats, consistent figures, JSON written (a benchmark, not a test)."""

from __future__ import annotations

import json

import pytest
from conftest import tiny_agm_checkpoint

from oct_wsss.bench.run import run_bench, table
from oct_wsss.bench.timing import timed
from oct_wsss.cli import main
from oct_wsss.synth import make_volume


def test_timed_counts_repeats_after_warmup() -> None:
    calls = []
    seconds = timed(lambda: calls.append(1), repeats=3, warmup=2)
    assert len(calls) == 5 and len(seconds) == 3 and all(s >= 0 for s in seconds)


def test_bench_times_every_stage_of_student_and_agm(tmp_path) -> None:
    agm = tiny_agm_checkpoint(tmp_path / "agm.safetensors")
    volume = make_volume(0, n_bscans=3, height=96, width=80).volume
    report = run_bench(volume, device="cpu", repeats=2, checkpoints={"agm": agm}, methods=("student", "agm"),
                       log=lambda _m: None)
    names = [(s["method"], s["name"].split(" (")[0]) for s in report["stages"]]
    assert ("student", "propose volume") in names and ("agm", "GANomaly x̂") in names
    assert {n for m, n in names if m == "agm"} >= {"AGM classification", "GradCAM, no smoothing", "GradCAM, smoothing",
                                                  "refinement", "pseudo-label post-processing", "full proposal"}
    for s in report["stages"]:
        assert len(s["seconds"]) in (1, 2) and s["min_s"] <= s["median_s"] <= s["max_s"]
    assert report["peak_rss_mib"] > 0 and report["peak_gpu_mib"] is None
    assert "GradCAM, smoothing" in table(report)
    # the grad-cam package baseline ran on the same weights and inputs: both CAM stages have a speed-up
    baseline = {n for m, n in names if m == "agm-baseline"}
    assert any("aug_smooth" in n for n in baseline) and any("no smoothing" in n for n in baseline)
    assert set(report["speedup"]) == {"gradcam", "gradcam_smoothing"}
    assert all(v > 0 for v in report["speedup"].values())


def test_bench_times_the_layer_model_network_and_ordering() -> None:
    volume = make_volume(0, n_bscans=2, height=96, width=80).volume
    report = run_bench(volume, device="cpu", repeats=2, methods=("layers",), log=lambda _m: None)
    names = [s["name"].split(" (")[0] for s in report["stages"] if s["method"] == "layers"]
    assert names == ["band probabilities", "bands and boundaries"]
    assert all(s["bscans"] == 2 and s["median_s"] > 0 for s in report["stages"])


def test_baseline_cams_are_the_grad_cam_packages_on_our_inputs(tmp_path) -> None:
    """The baseline's CAM of one class equals a direct pytorch-grad-cam call on the stacked inputs."""
    import torch
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from oct_wsss.bench.baseline import BaselineCam, StackedInputs
    from oct_wsss.propose.agm import AgmProposer

    p = AgmProposer.from_checkpoint(tiny_agm_checkpoint(tmp_path / "agm.safetensors"), device="cpu")
    torch.manual_seed(0)
    inputs = [torch.rand(2, p.net.config.image_channels, *p.input_size) for _ in range(3)]
    cams = BaselineCam(p)(inputs, p.lesion_outputs, p.input_size, smooth=False)
    assert cams.shape == (2, len(p.lesion_outputs), *p.input_size) and 0 <= cams.min() and cams.max() <= 1 + 1e-6
    layers = p.net.cam_layers()
    direct = GradCAM(StackedInputs(p.net, p.net.config.image_channels), [layers[n] for n in p.cam_layers])(
        input_tensor=torch.cat(inputs, 1)[1:2], targets=[ClassifierOutputTarget(p.lesion_outputs[0])])
    assert abs(cams[1, 0] - direct[0]).max() < 1e-5


def test_hrf_stage_runs_every_iteration(tmp_path) -> None:
    from oct_wsss.bench.hrf import hrf_stages

    volume = make_volume(0, n_bscans=1, height=128, width=128).volume
    (stage,) = hrf_stages(volume, __import__("torch").device("cpu"), repeats=1, iterations=2, sam2=False)
    assert stage.method == "hrf" and "2 iterations, classical" in stage.name and stage.seconds[0] > 0


@pytest.mark.slow
def test_cli_bench_quick_emits_json_with_every_stage(tmp_path) -> None:
    """The CI command: every method, the baseline and its speed-up, memory, as JSON."""
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--repeats", "1", "--device", "cpu", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    methods = {s["method"] for s in report["stages"]}
    assert methods >= {"student", "agm", "agm-baseline", "sam2", "hrf"}
    assert set(report["speedup"]) == {"gradcam", "gradcam_smoothing"}
    assert report["peak_rss_mib"] > 0 and "peak_gpu_mib" in report


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

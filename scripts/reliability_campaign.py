"""Reliability campaigns outside CI (docs/reliability.md): SIGKILLs during accepts, atheris per reader seed, hypothesis.

Runs, one after the other, and writes ``OUT/summary.json`` (counts, seconds, findings) as each stage ends:

* ``store``: ``tests/test_reliability_store.py -m slow -k sigkills_long`` until ``--kills`` writers were SIGKILLed;
* ``atheris``: ``tests/fuzz/fuzz_readers.py`` on each seed of ``oct_fuzz_harness`` (in its folder), ``--per-format``
  executions per reader format shared among that format's seeds, each seed capped at ``--seed-seconds``;
* ``hypothesis``: ``tests/test_io_fuzz.py -m slow -k long`` (10x the quick examples, times ``--hypothesis-scale``).

Usage: ``nice -n 10 python scripts/reliability_campaign.py --out runs/reliability [--stages store,atheris,hypothesis]``
(run from the repository root with its ``src`` importable). Sizes are parameters; the test suite's defaults stay small.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FUZZ = ROOT / "tests" / "fuzz" / "fuzz_readers.py"
DONE = re.compile(r"Done (\d+) runs in (\d+) second")
STATUS = re.compile(r"^#(\d+)\s", re.MULTILINE)
STATS = re.compile(r"stat::number_of_executed_units: (\d+)")
FINDING = re.compile(r"(Uncaught Python exception|ERROR: libFuzzer: \S+|AssertionError: .*)")


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


def _save(out: Path, summary: dict) -> None:
    (out / "summary.json").write_text(json.dumps(summary, indent=1))


def store_stage(out: Path, kills: int) -> dict:
    """The SIGKILL campaign through its pytest test; counts from the test's JSON report."""
    report = out / "store.json"
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "slow", "-k",
                           "sigkills_long", "tests/test_reliability_store.py"], cwd=ROOT, capture_output=True,
                          text=True, env=_env(OCT_CRASH_KILLS=str(kills), OCT_RELIABILITY_REPORT=str(report)))
    figures = json.loads(report.read_text()).get("crash_long", {}) if report.is_file() else {}
    return {"passed": proc.returncode == 0, "seconds": round(time.monotonic() - t0, 1), **figures,
            "tail": proc.stdout[-1500:] if proc.returncode else ""}


def seed_formats() -> dict[str, str]:
    """Seed name -> reader format, from the harness's own seed builder."""
    sys.path.insert(0, str(FUZZ.parent))
    import oct_fuzz_harness as fh

    with tempfile.TemporaryDirectory() as tmp:
        return {name: seed.fmt for name, seed in fh.build_seeds(Path(tmp)).items()}


def executions(log: str) -> int:
    """Inputs libFuzzer ran, from its log: "Done N runs", else its final stats (a run stopped by a finding), else the
    last "#N" status line."""
    done, stats = DONE.findall(log), STATS.findall(log)
    if done:
        return int(done[-1][0])
    return int(stats[-1]) if stats else max((int(m) for m in STATUS.findall(log)), default=0)


def atheris_seed(out: Path, seed: str, runs: int, seconds: int, timeout: int, rss_mb: int) -> dict:
    """One libFuzzer run on ``seed``: executions done, seconds, and the first finding (its input under OUT/crashes)."""
    corpus, crashes = out / "corpus" / seed, out / "crashes"
    corpus.mkdir(parents=True, exist_ok=True)
    crashes.mkdir(exist_ok=True)
    log = out / "logs" / f"atheris-{seed}.log"
    log.parent.mkdir(exist_ok=True)
    t0 = time.monotonic()
    with log.open("w") as f:
        proc = subprocess.run([sys.executable, str(FUZZ), str(corpus), f"-runs={runs}", f"-max_total_time={seconds}",
                               f"-timeout={timeout}", f"-rss_limit_mb={rss_mb}", f"-artifact_prefix={crashes}/{seed}-",
                               "-print_final_stats=1"], cwd=out, stdout=f, stderr=subprocess.STDOUT,
                              env=_env(OCT_FUZZ_SEED=seed))
    text = log.read_text(errors="replace")
    finding = FINDING.search(text)
    return {"runs": executions(text), "seconds": round(time.monotonic() - t0, 1), "exit": proc.returncode,
            "finding": None if finding is None else finding.group(0)[:300]}


def atheris_stage(out: Path, summary: dict, per_format: int, seconds: int, only: list[str] | None,
                  timeout: int = 10) -> dict:
    """``per_format`` executions per reader format, split among its seeds."""
    formats = seed_formats()
    per_fmt_seeds: dict[str, list[str]] = defaultdict(list)
    for name, fmt in formats.items():
        if only is None or name in only:
            per_fmt_seeds[fmt].append(name)
    result = summary.setdefault("atheris", {"seeds": {}})
    for fmt, names in per_fmt_seeds.items():
        for name in names:
            result["seeds"][name] = {"format": fmt, **atheris_seed(out, name, math.ceil(per_format / len(names)),
                                                                   seconds, timeout=timeout, rss_mb=3072)}
            _save(out, summary)
    totals: dict[str, int] = defaultdict(int)
    for entry in result["seeds"].values():
        totals[entry["format"]] += entry["runs"]
    result["per_format"] = dict(totals)
    return result


def hypothesis_stage(out: Path, scale: float) -> dict:
    """The slow hypothesis fuzz tests; counts per format from their JSON report."""
    report = out / "hypothesis.json"
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "slow", "-k", "long",
                           "tests/test_io_fuzz.py"], cwd=ROOT, capture_output=True, text=True,
                          env=_env(OCT_FUZZ_SCALE=str(scale), OCT_FUZZ_REPORT=str(report)))
    data = json.loads(report.read_text()) if report.is_file() else {}
    return {"passed": proc.returncode == 0, "seconds": round(time.monotonic() - t0, 1),
            "inputs": sum(c.get("inputs", 0) for c in data.get("counts", {}).values()), **data,
            "tail": proc.stdout[-3000:] if proc.returncode else ""}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "reliability")
    parser.add_argument("--stages", default="store,atheris,hypothesis")
    parser.add_argument("--kills", type=int, default=1000, help="SIGKILLs during accepts (at least)")
    parser.add_argument("--per-format", type=int, default=10000, help="atheris executions per reader format")
    parser.add_argument("--seed-seconds", type=int, default=1800, help="cap per atheris seed")
    parser.add_argument("--timeout", type=int, default=10, help="libFuzzer's -timeout per input (raise it on a "
                        "loaded machine: a starved reader is not a hang)")
    parser.add_argument("--seeds", help="comma-separated seed names (default: all)")
    parser.add_argument("--hypothesis-scale", type=float, default=1.0, help="OCT_FUZZ_SCALE for the slow tests")
    args = parser.parse_args()
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "summary.json"
    summary = json.loads(path.read_text()) if path.is_file() else {}
    for stage in args.stages.split(","):
        t0 = time.monotonic()
        print(f"campaign: {stage} ...", flush=True)
        if stage == "store":
            summary["store"] = store_stage(args.out, args.kills)
        elif stage == "atheris":
            atheris_stage(args.out, summary, args.per_format, args.seed_seconds,
                          args.seeds.split(",") if args.seeds else None, args.timeout)
        elif stage == "hypothesis":
            summary["hypothesis"] = hypothesis_stage(args.out, args.hypothesis_scale)
        else:
            raise SystemExit(f"unknown stage {stage!r}")
        print(f"campaign: {stage} done in {time.monotonic() - t0:.0f} s", flush=True)
        _save(args.out, summary)


if __name__ == "__main__":
    main()

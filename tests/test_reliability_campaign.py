"""The campaign script's reading of libFuzzer logs: a run stopped by a finding still counts what it executed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "reliability_campaign.py"


def _campaign():
    spec = importlib.util.spec_from_file_location("reliability_campaign", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_executions_are_read_from_every_kind_of_libfuzzer_log() -> None:
    executions = _campaign().executions
    assert executions("#2\tINITED cov: 5\n#4096\tpulse cov: 9\nDone 5000 runs in 40 second(s)\n") == 5000
    stopped = ("#2\tINITED cov: 5\n#2048\tpulse cov: 9\n==1== ERROR: libFuzzer: timeout after 13 seconds\n"
               "stat::number_of_executed_units: 3152\nstat::average_exec_per_sec:     52\n")
    assert executions(stopped) == 3152
    assert executions("INFO: seed\n#2\tINITED cov: 5\n#1024\tpulse cov: 9\n") == 1024
    assert executions("INFO: nothing ran\n") == 0

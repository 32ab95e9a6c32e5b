"""Two processes on loopback train one model: identical parameters, one
workdir written by process 0 and resumed by both."""

from __future__ import annotations

import re

import pytest
from conftest import run_module


@pytest.mark.slow
def test_two_processes_match_each_other_and_one_process(tmp_path):
  result = run_module(
    "experiments.distributed_cpu",
    "--processes=2",
    "--local_devices=2",
    "--epochs=2",
    "--seeds=2",
    "--users=64",
    "--items=40",
    "--ratings=900",
    "--hidden_sizes=8",
    "--batch_size=16",
    "--timeout=240",
    f"--workdir={tmp_path}",
    cache=tmp_path / "cache",
  )
  assert result.returncode == 0, result.stdout + result.stderr[-3000:]
  out = result.stdout
  assert "2 processes x 2 CPU devices, mesh members:1 x data:4" in out
  between = re.search(r"between processes: (\S+)", out).group(1)
  to_one = re.search(r"to one process: +(\S+)", out).group(1)
  assert float(between) == 0.0 and float(to_one) <= 1e-4
  # fit() from both processes into one workdir, then resumed: process 0
  # alone wrote the metrics (each epoch once), orbax the last checkpoint.
  assert "metrics of epochs [1, 2]; checkpoints of epochs [2]" in out
  fit_gap = re.search(r"fit\(\) to the loop: (\S+)", out).group(1)
  assert float(fit_gap) <= 1e-4
  assert (
    "Resuming after epoch 1" in (tmp_path / "process_1" / "log.txt").read_text()
  )
  assert "OK: identical in every process" in out
  # Each worker really was one of two processes.
  for index in (0, 1):
    log = (tmp_path / f"process_{index}" / "log.txt").read_text()
    assert f"Process {index} of 2, 2 local of 4 devices" in log

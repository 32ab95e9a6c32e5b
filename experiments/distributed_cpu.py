r"""Two processes on this machine train one model together (CPU, loopback).

  python -m experiments.distributed_cpu
  python -m experiments.distributed_cpu --processes=2 --local_devices=2

The launcher starts ``--processes`` worker processes that join one JAX run
through ``jax.distributed`` (coordinator on 127.0.0.1, a free port), each
with ``--local_devices`` CPU devices, and one single-process run on one
device. The workers train on a mesh whose ``data`` axis spans every device
of every process: each global batch is split across the processes, and
XLA's collectives (gloo over TCP on loopback) add up the gradients. All
runs use the same synthetic data and seeds.

The workers then train the same run through ``aejax.fit.fit`` into one
workdir that all of them share: one epoch, then a rerun that resumes from
its checkpoint (written by orbax from every process) for the rest. Only
process 0 writes the workdir's own files.

At the end the launcher compares the parameters: they must be identical in
every worker, and equal to the single-process run within ``--tolerance``.
It also checks the shared workdir: each epoch's metrics once, the last
epoch's checkpoint, and training losses equal (within ``--tolerance``) to
those of the workers' own loop, which a resume from a wrongly restored
state would miss. It prints the figures and exits with status 0 when all
of this holds. Every process is bounded by ``--timeout`` and stopped if it
runs over.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import app, flags

_PROCESSES = flags.DEFINE_integer("processes", 2, "Worker processes.")
_LOCAL_DEVICES = flags.DEFINE_integer(
  "local_devices", 2, "CPU devices in each worker."
)
_EPOCHS = flags.DEFINE_integer("epochs", 3, "Epochs.")
_SEEDS = flags.DEFINE_integer("seeds", 2, "Members trained together.")
_USERS = flags.DEFINE_integer("users", 300, "Synthetic users.")
_ITEMS = flags.DEFINE_integer("items", 200, "Synthetic items.")
_RATINGS = flags.DEFINE_integer("ratings", 12000, "Synthetic ratings.")
_HIDDEN_SIZES = flags.DEFINE_list("hidden_sizes", ["32"], "Hidden widths.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Global batch size.")
_TOLERANCE = flags.DEFINE_float(
  "tolerance", 1e-4, "Largest parameter difference to the single run."
)
_TIMEOUT = flags.DEFINE_integer("timeout", 300, "Seconds for each process.")
_WORKDIR = flags.DEFINE_string(
  "workdir", None, "Where each process writes its parameters (temporary)."
)
_ROLE = flags.DEFINE_enum(
  "role", "launch", ["launch", "worker", "single"], "Internal."
)
_PORT = flags.DEFINE_integer("port", 0, "Internal: the coordinator's port.")
_PROCESS_ID = flags.DEFINE_integer("process_id", 0, "Internal.")

LOOPBACK = "127.0.0.1"
# The workdir that fit() writes from every worker.
SHARED_RUN = "fit_run"


def _config():
  from aejax import variants

  return variants.get_config(
    "plain",
    dataset="ml-100k",
    split="random",
    hidden_sizes=tuple(int(h) for h in _HIDDEN_SIZES.value),
    batch_size=_BATCH_SIZE.value,
    eval_batch_size=_BATCH_SIZE.value,
    epochs=_EPOCHS.value,
    seeds=_SEEDS.value,
    learning_rate=1e-2,
  )


def train_and_save(out: pathlib.Path, distributed: bool) -> None:
  """One process's share: trains, then saves its copy of the parameters."""
  import jax

  jax.config.update("jax_platforms", "cpu")
  if distributed:
    jax.config.update("jax_num_cpu_devices", _LOCAL_DEVICES.value)
  from aejax import fit, parallel, train, variants
  from aejax.data import synthetic
  from aejax.data.ratings import Rows

  if distributed:
    parallel.initialize_distributed(
      f"{LOOPBACK}:{_PORT.value}", _PROCESSES.value, _PROCESS_ID.value
    )
    mesh = parallel.make_mesh(members=1, data=-1)
  else:
    mesh = None

  shape = synthetic.Shape(
    _USERS.value, _ITEMS.value, _RATINGS.value, min_per_user=5
  )
  data = synthetic.load(shape, seed=0)
  config = _config()
  members = variants.members(config)
  train_rows = Rows.from_ratings(data.train)
  program = train.make_program(config, train_rows.n_columns, members)
  states, hyper = train.init_members(
    program, members, fit.initial_output_bias(config, train_rows)
  )
  parallel.check_layout(mesh, len(members), {"batch": config.batch_size})
  states, hyper, device_rows = parallel.place(mesh, states, hyper, train_rows)
  epoch_fn = train.make_epoch_fn(program, train_rows, config.batch_size, mesh)
  losses = []
  for epoch in range(config.epochs):
    states, totals = epoch_fn(states, hyper, device_rows, np.int32(epoch))
    totals = jax.device_get(totals)
    losses.append((totals.loss / totals.steps).tolist())

  # The parameters are replicated over the data axis, so this process's
  # first shard of each holds every member's values.
  leaves = jax.tree_util.tree_leaves_with_path(states.params)
  arrays = {
    jax.tree_util.keystr(path): np.asarray(leaf.addressable_data(0))
    for path, leaf in leaves
  }
  np.savez(out / "params.npz", **arrays)
  (out / "summary.json").write_text(
    json.dumps(
      {
        "losses": losses,
        "process_index": jax.process_index(),
        "process_count": jax.process_count(),
        "devices": jax.device_count(),
        "local_devices": jax.local_device_count(),
        "mesh": parallel.describe(mesh),
      }
    )
  )

  if distributed:
    shared = out.parent / SHARED_RUN
    fit.fit(dataclasses.replace(config, epochs=1), data, shared, mesh=mesh)
    fit.fit(config, data, shared, mesh=mesh)


def _free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
    probe.bind((LOOPBACK, 0))
    return probe.getsockname()[1]


def _check_loopback() -> None:
  # gloo binds its TCP transport to the address of this host's name.
  address = socket.gethostbyname(socket.gethostname())
  if not address.startswith("127."):
    raise SystemExit(
      f"error: this host's name resolves to {address}, not a loopback "
      "address; the collectives would leave the loopback interface"
    )


def _start(role: str, out: pathlib.Path, port: int, process_id: int):
  out.mkdir(parents=True, exist_ok=True)
  args = [
    sys.executable,
    "-m",
    "experiments.distributed_cpu",
    f"--role={role}",
    f"--workdir={out}",
    f"--port={port}",
    f"--process_id={process_id}",
    f"--processes={_PROCESSES.value}",
    f"--local_devices={_LOCAL_DEVICES.value}",
    f"--epochs={_EPOCHS.value}",
    f"--seeds={_SEEDS.value}",
    f"--users={_USERS.value}",
    f"--items={_ITEMS.value}",
    f"--ratings={_RATINGS.value}",
    f"--hidden_sizes={','.join(_HIDDEN_SIZES.value)}",
    f"--batch_size={_BATCH_SIZE.value}",
  ]
  env = dict(
    os.environ,
    JAX_PLATFORMS="cpu",
    JAX_COORDINATOR_BIND_ADDRESS=f"{LOOPBACK}:{port}",
  )
  log = open(out / "log.txt", "w")  # noqa: SIM115 - closed by the launcher
  process = subprocess.Popen(
    args,
    env=env,
    stdout=log,
    stderr=subprocess.STDOUT,
    cwd=pathlib.Path(__file__).resolve().parents[1],
  )
  return process, log


def _wait(processes, deadline: float) -> list[int]:
  codes = []
  for process, log in processes:
    try:
      codes.append(process.wait(timeout=max(deadline - time.time(), 1)))
    except subprocess.TimeoutExpired:
      codes.append(None)
    finally:
      log.close()
  for process, _ in processes:
    if process.poll() is None:
      process.kill()
      process.wait()
  return codes


def launch(workdir: pathlib.Path) -> int:
  """Runs the workers and the single run; compares; returns the status."""
  _check_loopback()
  port = _free_port()
  started = time.time()
  deadline = started + _TIMEOUT.value
  outs = [workdir / f"process_{i}" for i in range(_PROCESSES.value)]
  runs = [_start("worker", out, port, i) for i, out in enumerate(outs)]
  runs.append(_start("single", workdir / "single", 0, 0))
  codes = _wait(runs, deadline)
  names = [out.name for out in outs] + ["single"]
  failed = [(n, c) for n, c in zip(names, codes, strict=True) if c != 0]
  if failed:
    for name, code in failed:
      reason = "timed out" if code is None else f"exit status {code}"
      print(f"{name}: {reason}; log:", file=sys.stderr)
      log = (workdir / name / "log.txt").read_text()
      print(log[-3000:], file=sys.stderr)
    return 1

  params = [
    dict(np.load(out / "params.npz", allow_pickle=False)) for out in outs
  ]
  single = dict(np.load(workdir / "single" / "params.npz", allow_pickle=False))
  summaries = [json.loads((out / "summary.json").read_text()) for out in outs]

  def largest_gap(a: dict, b: dict) -> float:
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)

  between = max(largest_gap(params[0], p) for p in params[1:])
  to_single = max(largest_gap(p, single) for p in params)
  first = summaries[0]
  print(
    f"{first['process_count']} processes x {first['local_devices']} CPU "
    f"devices, mesh {first['mesh']}, {_EPOCHS.value} epochs, "
    f"{_SEEDS.value} members, {time.time() - started:.1f} s"
  )
  for name, summary in zip(names, summaries, strict=False):
    print(f"{name}: loss per epoch (member 0) {_first(summary['losses'])}")
  single_losses = json.loads((workdir / "single" / "summary.json").read_text())
  print(f"single: loss per epoch (member 0) {_first(single_losses['losses'])}")
  print(f"largest parameter difference between processes: {between:.3g}")
  print(f"largest parameter difference to one process:   {to_single:.3g}")
  fit_ok = _check_shared_run(workdir / SHARED_RUN, first["losses"])
  ok = between == 0.0 and to_single <= _TOLERANCE.value and fit_ok
  if ok:
    print(
      "OK: identical in every process, equal to one process; fit() wrote "
      "one workdir and resumed"
    )
  else:
    print(f"FAILED (tolerance {_TOLERANCE.value:g} to one process)")
  return 0 if ok else 1


def _check_shared_run(folder: pathlib.Path, losses: list[list[float]]) -> bool:
  """Checks the workdir fit() wrote from every worker; prints what it holds.

  ``losses`` are the workers' own per-epoch losses (epoch, then member).
  """
  lines = (folder / "metrics.jsonl").read_text().splitlines()
  records = [json.loads(line) for line in lines if line.strip()]
  epochs = [record["epoch"] for record in records]
  saved = sorted(
    int(p.name) for p in (folder / "checkpoints").iterdir() if p.name.isdigit()
  )
  gap = math.inf
  if len(records) == len(losses):
    gap = max(
      abs(got - want)
      for record, loss in zip(records, losses, strict=True)
      for got, want in zip(record["train_loss"], loss, strict=True)
    )
  files = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
  print(
    f"fit() into one workdir, resumed after epoch 1: {', '.join(files)}; "
    f"metrics of epochs {epochs}; checkpoints of epochs {saved}"
  )
  print(f"largest train loss difference of fit() to the loop: {gap:.3g}")
  return (
    epochs == list(range(1, len(losses) + 1))
    and saved[-1:] == [len(losses)]
    and {"config.json", "results.json"} <= set(files)
    and gap <= _TOLERANCE.value
  )


def _first(losses: list[list[float]]) -> str:
  return ", ".join(f"{epoch[0]:.6f}" for epoch in losses)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if _ROLE.value != "launch":
    train_and_save(pathlib.Path(_WORKDIR.value), _ROLE.value == "worker")
    return 0
  if _WORKDIR.value:
    return launch(pathlib.Path(_WORKDIR.value))
  with tempfile.TemporaryDirectory() as folder:
    return launch(pathlib.Path(folder))


if __name__ == "__main__":
  app.run(main)

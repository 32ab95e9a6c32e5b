"""Resuming runs: bitwise continuation, refused changes, the NaN guard, and
a training process killed with SIGKILL."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from conftest import run_module, synthetic_rows, write_ratings

from aejax import checkpoint, fit, report, resume, train, variants
from aejax.data import movielens
from aejax.errors import DataError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(**overrides):
  settings = dict(
    hidden_sizes=(8,),
    batch_size=4,
    epochs=3,
    checkpoint_every=2,
    learning_rate=1e-3,
  )
  settings.update(overrides)
  return variants.get_config("denoising", **settings)


def without_seconds(records):
  return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def template(config, data):
  """A freshly initialised state of ``config``'s members."""
  members = variants.members(config)
  program = train.make_program(config, data.train.n_items, members)
  return train.init_members(program, members)[0]


def final_state(workdir, like):
  """The state in the newest checkpoint of ``workdir``."""
  with checkpoint.Checkpoints(workdir / "checkpoints") as checkpoints:
    return checkpoints.restore_latest(like)


def assert_states_equal(a, b):
  assert a.epoch == b.epoch
  leaves = zip(jax.tree.leaves(a.state), jax.tree.leaves(b.state), strict=True)
  for x, y in leaves:
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      x, y = jax.random.key_data(x), jax.random.key_data(y)
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_config_differences_name_every_field():
  saved = {"epochs": 3, "learning_rate": 0.001, "hidden_sizes": [8], "k": 0}
  current = {"epochs": 9, "learning_rate": 0.01, "hidden_sizes": [8, 4]}
  assert resume.config_differences(saved, current) == [
    "hidden_sizes: [8] -> [8, 4]",
    "k: 0 -> (absent)",
    "learning_rate: 0.001 -> 0.01",
  ]


def test_resume_continues_bitwise_and_drops_unsaved_epochs(
  tiny_split, tmp_path
):
  data = movielens.load("ml-100k", "u1", data_dir=tiny_split)
  workdir = tmp_path / "resumed"
  fit.fit(tiny_config(epochs=3), data, workdir)
  # As if killed after writing epoch 4's metrics (one whole line and one
  # cut short) but before its checkpoint.
  metrics_path = workdir / "metrics.jsonl"
  last = json.loads(metrics_path.read_text().splitlines()[-1])
  with open(metrics_path, "a") as f:
    f.write(json.dumps(dict(last, epoch=4)) + "\n" + '{"epoch": 5, "tra')

  resumed = fit.fit(tiny_config(epochs=5), data, workdir)
  reference_dir = tmp_path / "uninterrupted"
  reference = fit.fit(tiny_config(epochs=5), data, reference_dir)

  records = report.read_metrics(metrics_path)
  assert [r["epoch"] for r in records] == [1, 2, 3, 4, 5]
  expected = report.read_metrics(reference_dir / "metrics.jsonl")
  assert without_seconds(records) == without_seconds(expected)
  for name in ("test_rmse", "test_mae", "train_course_rmse"):
    assert resumed[name] == reference[name]
  like = template(tiny_config(epochs=5), data)
  assert_states_equal(
    final_state(workdir, like), final_state(reference_dir, like)
  )

  # The same command once more: nothing left to train, same results.
  again = fit.fit(tiny_config(epochs=5), data, workdir)
  assert again["test_rmse"] == reference["test_rmse"]
  assert report.read_metrics(metrics_path) == records


def test_changed_config_is_refused_naming_the_fields(tiny_split, tmp_path):
  data = movielens.load("ml-100k", "u1", data_dir=tiny_split)
  workdir = tmp_path / "run"
  fit.fit(tiny_config(epochs=2), data, workdir)
  before = {p.name: p.read_bytes() for p in workdir.iterdir() if p.is_file()}

  changed = tiny_config(epochs=2, learning_rate=0.1, hidden_sizes=(6,))
  with pytest.raises(resume.ResumeError) as caught:
    fit.fit(changed, data, workdir)
  message = str(caught.value)
  assert "hidden_sizes: [8] -> [6]" in message
  assert "learning_rate: 0.001 -> 0.1" in message
  assert "epochs" not in message
  after = {p.name: p.read_bytes() for p in workdir.iterdir() if p.is_file()}
  assert after == before

  with pytest.raises(resume.ResumeError, match="1 is fewer than the 2"):
    fit.fit(tiny_config(epochs=1), data, workdir)
  other = dataclasses.replace(data, train=data.train.subset(np.s_[1:]))
  with pytest.raises(resume.ResumeError, match="trained on other data"):
    fit.fit(tiny_config(epochs=2), other, workdir)
  after = {p.name: p.read_bytes() for p in workdir.iterdir() if p.is_file()}
  assert after == before


def test_nan_from_a_huge_learning_rate_keeps_the_last_good_checkpoint(
  tiny_split, tmp_path
):
  data = movielens.load("ml-100k", "u1", data_dir=tiny_split)
  # Member 1 steps with a learning rate of 1e6; its decoupled weight decay
  # multiplies the weights by about -99 per step until they overflow.
  config = tiny_config(
    epochs=20,
    checkpoint_every=1,
    weight_decay=1e-4,
    sweep=(("learning_rate", (1e-3, 1e6)),),
  )
  workdir = tmp_path / "run"
  with pytest.raises(fit.NonFiniteLossError) as caught:
    fit.fit(config, data, workdir)
  error = caught.value
  assert error.member == 1 and "learning_rate=1e+06" in str(error)
  assert error.epoch >= 2, "the guard should let good epochs be saved"
  assert error.last_checkpoint == error.epoch - 1
  assert f"at epoch {error.epoch} in member 1" in str(error)
  assert f"checkpoint, of epoch {error.epoch - 1}, is kept" in str(error)

  records = report.read_metrics(workdir / "metrics.jsonl")
  assert [r["epoch"] for r in records] == list(range(1, error.epoch))
  assert not (workdir / "results.json").exists()
  kept = final_state(workdir, template(config, data))
  assert kept.epoch == error.epoch - 1
  for leaf in jax.tree.leaves(kept.state):
    if jax.dtypes.issubdtype(leaf.dtype, np.floating):
      assert np.isfinite(np.asarray(leaf)).all()


def test_metrics_are_cut_back_to_the_checkpoint(tmp_path):
  path = tmp_path / "metrics.jsonl"
  lines = [json.dumps({"epoch": e, "train_rmse": [e / 10]}) for e in (1, 2, 3)]
  path.write_text("\n".join(lines) + '\n{"epoch": 4, "train_')
  assert [r["epoch"] for r in report.truncate_metrics(path, 2)] == [1, 2]
  assert path.read_text() == "\n".join(lines[:2]) + "\n"
  assert report.truncate_metrics(tmp_path / "absent.jsonl", 0) == []
  assert (tmp_path / "absent.jsonl").read_text() == ""

  # A process that does not write the workdir reads the same epochs and
  # leaves the file as it is.
  whole = "\n".join(lines) + "\n"
  path.write_text(whole)
  kept = report.truncate_metrics(path, 2, rewrite=False)
  assert [r["epoch"] for r in kept] == [1, 2]
  assert path.read_text() == whole
  assert (
    report.truncate_metrics(tmp_path / "none.jsonl", 0, rewrite=False) == []
  )
  assert not (tmp_path / "none.jsonl").exists()

  path.write_text(lines[0] + "\n" + lines[2] + "\n")
  with pytest.raises(DataError, match=r"holds epochs \[1\], expected 1 to 2"):
    report.truncate_metrics(path, 2)
  with pytest.raises(DataError, match=r"holds epochs \[1\], expected 1 to 2"):
    report.truncate_metrics(path, 2, rewrite=False)
  path.write_text(lines[0] + "\nnot json\n" + lines[1] + "\n")
  with pytest.raises(DataError, match=r"metrics.jsonl:2: not a JSON record"):
    report.truncate_metrics(path, 2)


@pytest.fixture
def split_of_1000_users(tmp_path):
  """Enough rows that an epoch of single-row steps takes a while."""
  rows = synthetic_rows(n_users=1000, n_items=300, density=0.3)
  test = np.random.default_rng(2).random(len(rows)) < 0.2
  folder = tmp_path / "ml-100k"
  folder.mkdir()
  pairs = list(zip(rows, test, strict=True))
  write_ratings(folder / "u1.base", [r for r, held in pairs if not held])
  write_ratings(folder / "u1.test", [r for r, held in pairs if held])
  return folder


def committed_epochs(folder):
  """Epochs of the checkpoints orbax has finished (renamed into place)."""
  try:
    return [int(p.name) for p in folder.iterdir() if p.name.isdigit()]
  except FileNotFoundError:
    return []


KILL_RUN = dict(
  variant="denoising", hidden_sizes=(16,), batch_size=1, epochs=60
)


def test_sigkill_mid_run_then_rerun_equals_uninterrupted(
  split_of_1000_users, tmp_path
):
  workdir = tmp_path / "killed"
  command = [
    sys.executable,
    "-m",
    "experiments.movielens",
    f"--data_dir={split_of_1000_users}",
    f"--workdir={workdir}",
    "--variant=denoising",
    "--hidden_sizes=16",
    "--batch_size=1",
    "--epochs=60",
    "--checkpoint_every=5",
  ]
  env = dict(
    os.environ, AEJAX_DATA_DIR=str(tmp_path / "cache"), JAX_PLATFORMS="cpu"
  )
  process = subprocess.Popen(
    command,
    cwd=ROOT,
    env=env,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  metrics_path = workdir / "metrics.jsonl"
  deadline = time.monotonic() + 240
  try:
    # Once a checkpoint is on disk and an epoch past it is written, the
    # process is in the middle of training epochs it has not saved.
    while process.poll() is None and time.monotonic() < deadline:
      saved = committed_epochs(workdir / "checkpoints")
      lines = metrics_path.read_bytes().count(b"\n") if saved else 0
      if saved and lines > max(saved):
        break
      time.sleep(0.005)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
  finally:
    process.kill()
    process.wait()
  assert process.returncode == -signal.SIGKILL
  assert not (workdir / "results.json").exists()
  killed_at = len(report.read_metrics(metrics_path))
  with checkpoint.Checkpoints(workdir / "checkpoints") as checkpoints:
    saved = checkpoints.latest_epoch()
  assert 5 <= saved <= killed_at < 60

  rerun = run_module(*command[2:], cache=tmp_path / "cache")
  assert rerun.returncode == 0, rerun.stderr[-2000:]
  assert f"Resuming after epoch {saved} " in rerun.stderr

  data = movielens.load("ml-100k", "u1", data_dir=split_of_1000_users)
  config = variants.get_config(**KILL_RUN, checkpoint_every=60)
  reference_dir = tmp_path / "uninterrupted"
  cpu = jax.devices("cpu")[0]
  with jax.default_device(cpu):
    fit.fit(config, data, reference_dir)
  # Every figure of every epoch, to the last bit; the final parameters'
  # equality is checked by the in-process resume test.
  records = report.read_metrics(metrics_path)
  assert [r["epoch"] for r in records] == list(range(1, 61))
  expected = report.read_metrics(reference_dir / "metrics.jsonl")
  assert without_seconds(records) == without_seconds(expected)


@pytest.mark.parametrize("damage", ["meta", "state"])
def test_damaged_checkpoint_is_a_resume_error(tmp_path, damage):
  config = tiny_config()
  workdir = tmp_path / "run"
  report.write_json(workdir / "config.json", config.to_json())
  state = {"weights": jax.numpy.arange(6.0), "key": jax.random.key(3)}
  with checkpoint.Checkpoints(workdir / "checkpoints") as checkpoints:
    checkpoints.save(2, state, info={"data": "fingerprint"})
  step = workdir / "checkpoints" / "2"
  if damage == "meta":
    (step / "meta" / "metadata").write_text('{"epoch": 2, "inf')
  else:
    for path in (step / "state").rglob("*"):
      if path.is_file() and path.parent.name == "d":
        path.write_bytes(b"\0" * 16)
  with pytest.raises(resume.ResumeError, match=r"epoch 2 .* cannot be read"):
    epoch = resume.start_epoch(workdir, config, "fingerprint")
    resume.restore(workdir, epoch, state)


def test_k_schedule_fixes_the_epochs_of_a_resumed_run(tmp_path):
  # The k schedule ends at a share of `epochs`: changing it would move k
  # in the epochs already trained.
  config = variants.get_config("ksparse", k_start=100, epochs=4)
  report.write_json(tmp_path / "config.json", config.to_json())
  with pytest.raises(resume.ResumeError, match="epochs: 4 -> 8"):
    resume.check_config(tmp_path, dataclasses.replace(config, epochs=8))
  resume.check_config(tmp_path, config)
  plain = variants.get_config("ksparse", k_start=0, epochs=4)
  report.write_json(tmp_path / "config.json", plain.to_json())
  resume.check_config(tmp_path, dataclasses.replace(plain, epochs=8))


def test_a_field_added_since_the_run_counts_as_its_default(tmp_path):
  config = variants.get_config("denoising")
  saved = config.to_json()
  del saved["k_start"]  # as written before the k schedule existed
  report.write_json(tmp_path / "config.json", saved)
  resume.check_config(tmp_path, config)
  with pytest.raises(resume.ResumeError, match=r"k_start: 0 -> 5"):
    resume.check_config(tmp_path, dataclasses.replace(config, k_start=5))

"""The experiment script as a user runs it: good runs and bad input."""

from __future__ import annotations

import json
import re

import pytest
from conftest import run_module, write_ratings

from aejax import variants


def run(*flags, cache):
  return run_module("experiments.movielens", *flags, cache=cache)


def test_tiny_run_prints_table_and_writes_workdir(tiny_split, tmp_path):
  workdir = tmp_path / "run"
  result = run(
    "--variant=ksparse",
    f"--data_dir={tiny_split}",
    f"--workdir={workdir}",
    "--epochs=3",
    "--hidden_sizes=8",
    "--k=3",
    cache=tmp_path / "cache",
  )
  assert result.returncode == 0, result.stderr
  header = next(
    line for line in result.stdout.splitlines() if line.startswith("| pred")
  )
  cells = [cell.strip() for cell in header.strip("|").split("|")]
  assert cells[:6] == [
    "predictor",
    "epoch",
    "valid RMSE",
    "test RMSE",
    "test MAE",
    "test course RMSE",
  ]
  assert "| user + item biases |" in result.stdout
  assert (
    "No validation set, nothing selected: the last member 0" in result.stdout
  )
  results = json.loads((workdir / "results.json").read_text())
  assert results["variant"] == "ksparse" and results["epochs"] == 3


BAD_FILES = {
  "separator": (b"1\t2\t3\t4\n1,2,3,4\n", 2, "expected 4 fields"),
  "non_numeric": (b"1\t2\t3\t4\n1\t2\tx\t4\n", 2, "rating 'x' is not"),
  "range": (b"1\t2\t9\t4\n", 1, "rating '9' outside"),
  "missing_column": (b"1\t2\t3\t4\n1\t2\t3\n", 2, "found 3"),
  "empty": (b"", 1, "the file holds no ratings"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_ratings_file_gives_one_line_and_status_2(tmp_path, case):
  content, line, reason = BAD_FILES[case]
  folder = tmp_path / "data"
  folder.mkdir()
  write_ratings(folder / "u1.base", [(1, 1, 3, 5), (2, 2, 4, 6)])
  (folder / "u1.test").write_bytes(content)
  workdir = tmp_path / "run"
  cache = tmp_path / "cache"
  result = run(f"--data_dir={folder}", f"--workdir={workdir}", cache=cache)
  assert result.returncode == 2
  messages = [m for m in result.stderr.splitlines() if m.startswith("error")]
  assert messages == [messages[0]] and len(messages) == 1
  assert f"u1.test:{line}: " in messages[0] and reason in messages[0]
  assert "Traceback" not in result.stderr
  assert not workdir.exists()
  assert not cache.exists() or not any(cache.rglob("*"))


def test_bad_flag_value_names_it(tmp_path, tiny_split):
  result = run(
    f"--data_dir={tiny_split}",
    "--noise_rate=1.5",
    f"--workdir={tmp_path / 'run'}",
    cache=tmp_path / "cache",
  )
  assert result.returncode == 2
  assert "noise_rate must lie in [0, 1), not 1.5" in result.stderr
  assert "Traceback" not in result.stderr
  assert not (tmp_path / "run").exists()


def test_empty_validation_set_gives_one_line_and_status_2(tmp_path, tiny_split):
  workdir = tmp_path / "run"
  result = run(
    f"--data_dir={tiny_split}",
    "--valid_fraction=0.0001",
    f"--workdir={workdir}",
    cache=tmp_path / "cache",
  )
  assert result.returncode == 2
  assert "the validation set holds no rating" in result.stderr
  assert "Traceback" not in result.stderr
  assert not (workdir / "config.json").exists()


def test_workdir_that_is_a_file_gives_one_line_and_status_2(
  tmp_path, tiny_split
):
  path = tmp_path / "results.json"
  path.write_text("{}")
  result = run(
    f"--data_dir={tiny_split}",
    f"--workdir={path}",
    cache=tmp_path / "cache",
  )
  assert result.returncode == 2
  assert "is a file, not a folder" in result.stderr
  assert "Traceback" not in result.stderr
  assert path.read_text() == "{}"


def test_all_variants_write_a_comparison(tiny_split, tmp_path):
  workdir = tmp_path / "all"
  result = run(
    "--variant=all",
    f"--data_dir={tiny_split}",
    f"--workdir={workdir}",
    "--epochs=2",
    "--seeds=2",
    cache=tmp_path / "cache",
  )
  assert result.returncode == 0, result.stderr
  comparison = json.loads((workdir / "comparison.json").read_text())
  assert [row["variant"] for row in comparison["rows"]] == list(
    variants.COMPARED
  )
  assert "autorec" not in variants.COMPARED and "plain" in variants.COMPARED
  assert all(row["seeds"] == 2 for row in comparison["rows"])
  for name in variants.COMPARED:
    run_results = json.loads((workdir / name / "results.json").read_text())
    assert run_results["n_members"] == 2
    row = comparison["rows"][list(variants.COMPARED).index(name)]
    assert row["test_rmse_mean"] == run_results["test_rmse"]
  table = (workdir / "comparison.md").read_text()
  assert table.count("\n| ") == len(variants.COMPARED) + 1
  assert (workdir / "comparison.png").stat().st_size > 0
  assert re.search(
    r"\| variant +\| setting +\| seeds +\| test RMSE", result.stdout
  )


def test_faithful_needs_the_course_variant(tmp_path, tiny_split):
  result = run(
    f"--data_dir={tiny_split}",
    "--variant=plain",
    "--faithful",
    f"--workdir={tmp_path / 'run'}",
    cache=tmp_path / "cache",
  )
  assert result.returncode == 2
  assert "applies only to --variant=course, not --variant=plain" in (
    result.stderr
  )
  assert "Traceback" not in result.stderr
  assert not (tmp_path / "run").exists()


def test_course_faithful_tiny_run(tmp_path, tiny_split):
  workdir = tmp_path / "run"
  result = run(
    "--variant=course",
    "--faithful",
    f"--data_dir={tiny_split}",
    f"--workdir={workdir}",
    "--epochs=2",
    cache=tmp_path / "cache",
  )
  assert result.returncode == 0, result.stderr
  assert "train course RMSE" in result.stdout
  config = json.loads((workdir / "config.json").read_text())
  assert config["accumulate_gradients"] and config["drop_first_line"]
  assert config["optimizer"] == "torch_rmsprop" and config["batch_size"] == 1
  results = json.loads((workdir / "results.json").read_text())
  test_lines = (tiny_split / "u1.test").read_text().splitlines()
  assert results["test_ratings"] == len(test_lines) - 1


def run_in_process(*argv):
  """Runs the script's ``main`` here, sparing a process start."""
  from absl import flags

  from experiments import movielens as script

  flags.FLAGS.unparse_flags()
  flags.FLAGS(["movielens", *argv])
  try:
    return script.main(["movielens"])
  finally:
    flags.FLAGS.unparse_flags()


def error_lines(text):
  return [line for line in text.splitlines() if line.startswith("error")]


def test_nan_loss_gives_one_line_nonzero_status_and_keeps_checkpoint(
  tiny_split, tmp_path, capsys
):
  workdir = tmp_path / "run"
  status = run_in_process(
    "--variant=denoising",
    f"--data_dir={tiny_split}",
    f"--workdir={workdir}",
    "--hidden_sizes=8",
    "--batch_size=4",
    "--epochs=20",
    "--checkpoint_every=1",
    "--weight_decay=1e-4",
    "--sweep=learning_rate=1e-3,1e6",
  )
  assert status == 3
  (message,) = error_lines(capsys.readouterr().err)
  assert message.startswith("error: non-finite training loss at epoch ")
  assert "in member 1 (" in message and "learning_rate=1e+06" in message
  assert f"is kept in {workdir / 'checkpoints'}" in message
  assert any(p.name.isdigit() for p in (workdir / "checkpoints").iterdir())
  assert not (workdir / "results.json").exists()


def test_changed_config_in_a_workdir_gives_one_line_and_status_2(
  tiny_split, tmp_path, capsys
):
  workdir = tmp_path / "run"
  workdir.mkdir()
  earlier = variants.get_config("ksparse", learning_rate=0.01, k=7)
  (workdir / "config.json").write_text(json.dumps(earlier.to_json()))
  status = run_in_process(f"--data_dir={tiny_split}", f"--workdir={workdir}")
  assert status == 2
  (message,) = error_lines(capsys.readouterr().err)
  assert "holds a run with another config (" in message
  default = variants.VARIANTS["ksparse"]
  assert f"k: 7 -> {default.k}" in message
  assert f"learning_rate: 0.01 -> {default.learning_rate:g}" in message
  assert sorted(p.name for p in workdir.iterdir()) == ["config.json"]

r"""Trains an autoencoder variant on MovieLens and reports its test error.

  python -m experiments.movielens --variant=ksparse
  python -m experiments.movielens --variant=stacked --epochs=100 \
      --workdir=runs/stacked
  python -m experiments.movielens --variant=course --faithful
  python -m experiments.movielens --seeds=4 --mesh=members:2,data:4
  python -m experiments.movielens --variant=autorec --seeds=5 --ensemble
  python -m experiments.movielens --variant=autorec --folds=5
  python -m experiments.movielens --variant=autorec --dataset=ml-1m \
      --split=random --folds=3

With no other flag it trains on ML-100k's official u1 split (fetched,
verified and cached on first use), logs one line per epoch and ends with a
table of final figures next to the baselines. Everything the run produces
lands in ``--workdir``.

``--variant=all`` trains every variant in turn, in one process (one compiled
program per variant, each into ``<workdir>/<variant>/``), and writes a
comparison (``comparison.md``, ``comparison.json``, ``comparison.png``).
"""

from __future__ import annotations

import datetime
import pathlib
import sys

import jax
import numpy as np
from absl import app, flags, logging
from jax.experimental import multihost_utils

from aejax import fit, folds, parallel, report, variants
from aejax.data import movielens, sources

_VARIANT = flags.DEFINE_enum(
  "variant",
  "ksparse",
  [*variants.VARIANTS, "all"],
  "Which autoencoder; all trains every variant and compares them.",
)
_DATASET = flags.DEFINE_enum(
  "dataset", "ml-100k", ["ml-100k", "ml-1m"], "MovieLens data set."
)
_SPLIT = flags.DEFINE_string(
  "split",
  None,
  "ML-100k official split (u1..u5, ua, ub) or random. Default: u1 for "
  "ml-100k, random (90/10) for ml-1m, which has no official split.",
)
_ORIENTATION = flags.DEFINE_enum(
  "orientation",
  None,
  ["user", "item"],
  "Rows are users (the tutorial) or items (AutoRec). Default: variant's.",
)
_EPOCHS = flags.DEFINE_integer("epochs", None, "Epochs. Default: variant's.")
_BATCH_SIZE = flags.DEFINE_integer(
  "batch_size", None, "Rows per step; 1 is one user per step."
)
_LEARNING_RATE = flags.DEFINE_float("learning_rate", None, "Learning rate.")
_WEIGHT_DECAY = flags.DEFINE_float("weight_decay", None, "Weight decay.")
_HIDDEN_SIZES = flags.DEFINE_list(
  "hidden_sizes", None, "Hidden layer widths, e.g. 20,10,20."
)
_K = flags.DEFINE_integer("k", None, "Code units kept by k-sparse selection.")
_NOISE_RATE = flags.DEFINE_float(
  "noise_rate", None, "Share of observed inputs zeroed (denoising)."
)
_L2_WEIGHT = flags.DEFINE_float(
  "l2_weight", None, "AutoRec's lambda: (lambda / 2) ||W||^2 on kernels."
)
_KERNEL_DIMS = flags.DEFINE_integer(
  "kernel_dims",
  None,
  "Embedding dimensions of a local kernel gating every layer's weights; "
  "0 keeps dense layers.",
)
_KERNEL_WEIGHT = flags.DEFINE_float(
  "kernel_weight", None, "lambda_s: (lambda_s / 2) sum K^2 on kernel values."
)
_OPTIMIZER = flags.DEFINE_enum(
  "optimizer", None, ["rmsprop", "torch_rmsprop", "adamw"], "Optimizer."
)
_LR_SCHEDULE = flags.DEFINE_enum(
  "lr_schedule", None, ["constant", "cosine"], "Learning-rate schedule."
)
_VALID_FRACTION = flags.DEFINE_float(
  "valid_fraction",
  None,
  "Share of the training ratings held out to choose the epoch on; 0 "
  "keeps the last epoch.",
)
_PATIENCE = flags.DEFINE_integer(
  "patience",
  None,
  "Stop after this many epochs without validation improvement; 0 never.",
)
_COLD_START = flags.DEFINE_enum(
  "cold_start_predictor",
  None,
  ["mean", "bias"],
  "Prediction for users or items without training ratings.",
)
_TIED = flags.DEFINE_bool(
  "tied", None, "Decoder weights are the encoder's, transposed."
)
_K_START = flags.DEFINE_integer(
  "k_start", None, "k-sparse schedule: units kept at first, lowered to k."
)
_K_SCHEDULE_FRACTION = flags.DEFINE_float(
  "k_schedule_fraction", None, "Share of the epochs over which k falls."
)
_EVAL_K_MULTIPLIER = flags.DEFINE_float(
  "eval_k_multiplier", None, "alpha: evaluation keeps alpha x k code units."
)
_SPARSITY_TARGET = flags.DEFINE_float(
  "sparsity_target", None, "Target mean activation rho of the KL penalty."
)
_SPARSITY_WEIGHT = flags.DEFINE_float(
  "sparsity_weight", None, "Weight beta of the KL sparsity penalty."
)
_PRETRAIN = flags.DEFINE_enum(
  "pretrain",
  None,
  list(variants.PRETRAINING),
  "Layer-wise pretraining: denoising autoencoders or RBMs.",
)
_PRETRAIN_EPOCHS = flags.DEFINE_integer(
  "pretrain_epochs", None, "Pretraining epochs per layer; 0 skips it."
)
_PRETRAIN_LEARNING_RATE = flags.DEFINE_float(
  "pretrain_learning_rate", None, "Learning rate of pretraining."
)
_PRETRAIN_NOISE_RATE = flags.DEFINE_float(
  "pretrain_noise_rate", None, "Masking noise of each denoising layer."
)
_SEED = flags.DEFINE_integer(
  "seed", None, "Seed of the first member, the random split and the carve."
)
_SEEDS = flags.DEFINE_integer("seeds", None, "Members with different seeds.")
_ENSEMBLE = flags.DEFINE_boolean(
  "ensemble", None, "Also score the mean prediction of each setting's seeds."
)
_FOLDS = flags.DEFINE_integer(
  "folds",
  None,
  "Train on this many splits and report mean and standard deviation: "
  "u1..uN of ML-100k, or N seeded random splits.",
)
_SWEEP = flags.DEFINE_multi_string(
  "sweep", [], "name=v1,v2,... ; repeatable; crossed with the seeds."
)
_DATA_DIR = flags.DEFINE_string(
  "data_dir",
  None,
  "An extracted ml-100k folder (u.data, or <split>.base/.test) to read "
  "instead of the download cache.",
)
_FAITHFUL = flags.DEFINE_bool(
  "faithful",
  False,
  "With --variant=course: reproduce the tutorial's published run, whose "
  "gradients are never cleared (each step uses the sum of all gradients "
  "so far) and whose reader loses the first rating of each file.",
)
_WORKDIR = flags.DEFINE_string(
  "workdir",
  None,
  "Where results go. Default: a new folder under runs/. The same command "
  "with the same workdir resumes from its latest checkpoint.",
)
_CHECKPOINT_EVERY = flags.DEFINE_integer(
  "checkpoint_every",
  None,
  "Save a checkpoint every this many epochs (and after the last).",
)
_MESH = flags.DEFINE_string(
  "mesh",
  "",
  "Device mesh, e.g. members:2,data:4 (members split over devices, batch "
  "rows split over devices); one size may be -1. Default: one device.",
)
_COORDINATOR_ADDRESS = flags.DEFINE_string(
  "coordinator_address",
  None,
  "host:port of process 0, for a run over several processes.",
)
_NUM_PROCESSES = flags.DEFINE_integer(
  "num_processes", None, "Processes of a multi-process run."
)
_PROCESS_ID = flags.DEFINE_integer(
  "process_id", None, "This process's index in a multi-process run."
)
_DISTRIBUTED = flags.DEFINE_bool(
  "distributed",
  False,
  "Join a multi-process run described by the environment (Cloud TPU pod "
  "slices, SLURM, Open MPI, Kubernetes, or JAX_COORDINATOR_ADDRESS).",
)


def config_from_flags(variant: str) -> variants.Config:
  """The variant's defaults overridden by the flags that were given."""
  split = _SPLIT.value
  if split is None:
    split = "random" if _DATASET.value == "ml-1m" else "u1"
  overrides = {"dataset": _DATASET.value, "split": split}
  if _FAITHFUL.value:
    if _VARIANT.value != "course":
      raise ValueError(
        "--faithful reproduces the tutorial's own run and applies only to "
        f"--variant=course, not --variant={_VARIANT.value}"
      )
    overrides.update(variants.FAITHFUL)
  optional = {
    "orientation": _ORIENTATION.value,
    "epochs": _EPOCHS.value,
    "checkpoint_every": _CHECKPOINT_EVERY.value,
    "batch_size": _BATCH_SIZE.value,
    "learning_rate": _LEARNING_RATE.value,
    "weight_decay": _WEIGHT_DECAY.value,
    "k": _K.value,
    "noise_rate": _NOISE_RATE.value,
    "l2_weight": _L2_WEIGHT.value,
    "kernel_dims": _KERNEL_DIMS.value,
    "kernel_weight": _KERNEL_WEIGHT.value,
    "optimizer": _OPTIMIZER.value,
    "lr_schedule": _LR_SCHEDULE.value,
    "valid_fraction": _VALID_FRACTION.value,
    "patience": _PATIENCE.value,
    "cold_start_predictor": _COLD_START.value,
    "tied": _TIED.value,
    "k_start": _K_START.value,
    "k_schedule_fraction": _K_SCHEDULE_FRACTION.value,
    "eval_k_multiplier": _EVAL_K_MULTIPLIER.value,
    "sparsity_target": _SPARSITY_TARGET.value,
    "sparsity_weight": _SPARSITY_WEIGHT.value,
    "pretrain": _PRETRAIN.value,
    "pretrain_epochs": _PRETRAIN_EPOCHS.value,
    "pretrain_learning_rate": _PRETRAIN_LEARNING_RATE.value,
    "pretrain_noise_rate": _PRETRAIN_NOISE_RATE.value,
    "seed": _SEED.value,
    "seeds": _SEEDS.value,
    "ensemble": _ENSEMBLE.value,
  }
  overrides.update({k: v for k, v in optional.items() if v is not None})
  if _HIDDEN_SIZES.value is not None:
    overrides["hidden_sizes"] = tuple(
      _parse_number(v, "hidden_sizes", int) for v in _HIDDEN_SIZES.value
    )
  if _SWEEP.value:
    overrides["sweep"] = tuple(parse_sweep(s) for s in _SWEEP.value)
  try:
    return variants.get_config(variant, **overrides)
  except ValueError as error:
    if _VARIANT.value == "all":
      raise ValueError(f"variant {variant}: {error}") from None
    raise


def _parse_number(text: str, what: str, kind=float):
  try:
    return kind(text)
  except ValueError:
    raise ValueError(f"{what}: {text!r} is not a number") from None


def parse_sweep(text: str) -> tuple[str, tuple[float, ...]]:
  """``"learning_rate=0.1,0.01"`` -> ``("learning_rate", (0.1, 0.01))``."""
  name, sep, values = text.partition("=")
  if not sep or not values:
    raise ValueError(f"--sweep wants name=v1,v2,..., not {text!r}")
  name = name.strip()
  return name, tuple(
    _parse_number(v.strip(), f"--sweep {name}") for v in values.split(",")
  )


def default_workdir(config: variants.Config) -> pathlib.Path:
  stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
  if jax.process_count() > 1:
    # Every process must name the same folder: process 0's clock names it.
    codes = np.frombuffer(stamp.encode(), np.uint8)
    codes = multihost_utils.broadcast_one_to_all(codes)
    stamp = np.asarray(codes, np.uint8).tobytes().decode()
  return pathlib.Path("runs") / (
    f"{_VARIANT.value}-{config.dataset}-{config.split}-{stamp}"
  )


def _ranking_name(results: dict) -> str:
  cutoffs = [k for k in results if k.startswith("test_ndcg@")]
  return cutoffs[0].removeprefix("test_ndcg@") if cutoffs else "10"


def results_table(results: dict) -> str:
  """The final table: each member, each ensemble, their mean, and the
  baselines, scored on validation and (once) on test."""
  k = _ranking_name(results)
  header = [
    "predictor",
    "epoch",
    "valid RMSE",
    "test RMSE",
    "test MAE",
    "test course RMSE",
    "train course RMSE",
    f"recall@{k}",
    f"NDCG@{k}",
  ]
  keys = [
    "valid_rmse",
    "test_rmse",
    "test_mae",
    "test_course_rmse",
    "train_course_rmse",
    f"test_recall@{k}",
    f"test_ndcg@{k}",
  ]
  rows = []
  members = results["members"]
  swept = results.get("swept", [])
  setting = lambda entry: ", ".join(f"{n}={entry[n]:g}" for n in swept)
  for index, member in enumerate(members):
    label = (
      ", ".join(
        filter(
          None, [f"member {index} (seed {member['seed']}", setting(member)]
        )
      )
      + ")"
    )
    if len(members) == 1:
      label = results["variant"]
    rows.append([label, member["selected_epoch"], *map(member.get, keys)])
  if len(members) > 1:
    rows.append(["member mean", None, *map(results.get, keys)])
  for ensemble in results.get("ensembles", []):
    label = f"ensemble of {len(ensemble['seeds'])} seeds"
    if swept:
      label += f" ({setting(ensemble)})"
    rows.append([label, None, *map(ensemble.get, keys)])
  for baseline in results.get("baselines", []):
    rows.append([baseline["name"], None, *map(baseline.get, keys)])
  return report.format_table(header, rows)


# Exit status of a run stopped by a NaN or infinite loss (2 is bad input).
EXIT_DIVERGED = 3


def fail(error: Exception | str, status: int) -> int:
  """Prints ``error`` as one line on stderr; returns ``status``."""
  message = " ".join(str(error).split())
  print(f"error: {message}", file=sys.stderr)
  return status


def folds_table(summary: dict) -> str:
  """Test figures as mean +- standard deviation over folds."""
  header = ["predictor", "test RMSE", "test MAE", "test course RMSE"]
  keys = ["test_rmse", "test_mae", "test_course_rmse"]

  def cells(figures: dict, prefix: str = "") -> list[str]:
    out = []
    for key in keys:
      mean = figures.get(prefix + key)
      std = figures.get(prefix + key + "_std")
      out.append("-" if mean is None else f"{mean:.4f} +- {std:.4f}")
    return out

  model = summary["model"]
  rows = [["member mean", *cells(model)]]
  if "ensemble_test_rmse" in model:
    rows.append(["ensemble", *cells(model, "ensemble_")])
  rows.append(["selected on validation", *cells(model, "selected_")])
  for name, figures in summary["baselines"].items():
    rows.append([name, *cells(figures)])
  return report.format_table(header, rows)


def _load(config: variants.Config) -> movielens.SplitData:
  return movielens.load(
    config.dataset,
    config.split,
    data_dir=_DATA_DIR.value,
    seed=config.seed,
    test_fraction=config.test_fraction,
    drop_first_line=config.drop_first_line,
  )


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  names = (
    list(variants.COMPARED) if _VARIANT.value == "all" else [_VARIANT.value]
  )
  try:
    # Before anything touches a device.
    parallel.initialize_distributed(
      _COORDINATOR_ADDRESS.value,
      _NUM_PROCESSES.value,
      _PROCESS_ID.value,
      from_environment=_DISTRIBUTED.value,
    )
    # Every config is validated before any data is read or program compiled.
    configs = [config_from_flags(name) for name in names]
    first = configs[0]
    mesh = parallel.mesh_from_flag(_MESH.value)
    for config in configs:
      parallel.check_layout(
        mesh,
        len(variants.members(config)),
        {
          "batch_size": config.batch_size,
          "eval_batch_size": config.eval_batch_size,
        },
      )
    fold_configs = None
    if _FOLDS.value is not None:
      if len(configs) > 1:
        raise ValueError("--folds runs one variant, not --variant=all")
      fold_configs = folds.fold_configs(first, _FOLDS.value)
    data = _load(fold_configs[0] if fold_configs else first)
  except ValueError as error:  # DataError included
    return fail(error, 2)
  except sources.FetchError as error:
    return fail(error, 1)

  workdir = pathlib.Path(_WORKDIR.value or default_workdir(first))
  if workdir.exists() and not workdir.is_dir():
    return fail(f"--workdir {workdir} is a file, not a folder", 2)
  logging.info("Workdir %s", workdir)
  # With several processes only process 0 writes and reports.
  primary = jax.process_index() == 0
  prefix = ""
  try:
    if fold_configs is not None:
      loaded = {folds.fold_name(fold_configs[0]): data}
      load = lambda c: loaded.pop(folds.fold_name(c), None) or _load(c)
      summary = folds.run_folds(first, _FOLDS.value, load, workdir, mesh)
      if not primary:
        return 0
      for name, results in zip(
        summary["folds"], summary["results"], strict=True
      ):
        print(f"\n{name}: {summary_line(results)}")
        print(results_table(results))
        print(selected_line(results))
      print(
        f"\n{first.variant} on {first.dataset}, folds "
        f"{', '.join(summary['folds'])}: mean +- standard deviation"
      )
      print(folds_table(summary))
      print(f"\nResults in {workdir}")
      return 0

    if len(configs) == 1:
      results = fit.fit(first, data, workdir, mesh=mesh)
      if primary:
        print()
        print(summary_line(results))
        print(results_table(results))
        print(selected_line(results))
        print(f"\nResults in {workdir}")
      return 0

    runs, curves = [], {}
    for config in configs:
      prefix = f"variant {config.variant}: "
      logging.info("=== %s ===", config.variant)
      results = fit.fit(config, data, workdir / config.variant, mesh=mesh)
      runs.append(results)
      if primary:
        curves[config.variant] = report.read_metrics(
          workdir / config.variant / "metrics.jsonl"
        )
        print(summary_line(results), flush=True)
  except ValueError as error:  # DataError and ResumeError included
    return fail(f"{prefix}{error}", 2)
  except fit.NonFiniteLossError as error:
    return fail(f"{prefix}{error}", EXIT_DIVERGED)
  if not primary:
    return 0
  table = report.write_comparison(workdir, runs, curves)
  print()
  print(table)
  print(f"\nComparison in {workdir}/comparison.md, .json and .png")
  return 0


def selected_line(results: dict) -> str:
  """Which predictor validation chose, and its test figures."""
  chosen = results["selected"]
  swept = ", ".join(f"{n}={chosen[n]:g}" for n in results.get("swept", []))
  if not chosen.get("on_validation", True):
    return (
      f"No validation set, nothing selected: the last {chosen['predictor']}"
      + (f" ({swept})" if swept else "")
      + f" stands for the run, test RMSE {_number(chosen.get('test_rmse'))}"
    )
  return (
    f"Selected on validation: {chosen['predictor']}"
    + (f" ({swept})" if swept else "")
    + f", valid RMSE {_number(chosen.get('valid_rmse'))}, test RMSE "
    f"{_number(chosen.get('test_rmse'))}"
  )


def _number(value) -> str:
  return "-" if value is None else f"{value:.4f}"


def summary_line(results: dict) -> str:
  return (
    f"{results['variant']} on {results['dataset']} {results['split']}, "
    f"{results['epochs_run']} of {results['epochs']} epochs, "
    f"{results['seconds']:.1f} s (+{results['compile_seconds']:.1f} s "
    f"compiling): test RMSE {results['test_rmse']:.4f}"
  )


if __name__ == "__main__":
  app.run(main)

"""Runs one tiny fit on one device and on meshes of 8 CPU devices.

Started by ``test_parallel.py`` in a fresh process, because the number of
CPU devices is fixed when JAX first starts its backend. Prints one JSON
object: each layout's per-epoch metrics, those of a run on the 2 x 4 mesh
stopped after two epochs and resumed for the third, whether the restored
state carries the member sharding, and checks of the sharded densify
against the host reference.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import sys
import tempfile

os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
)

import jax
import jax.numpy as jnp
import numpy as np

from aejax import fit, parallel, report, resume, selection, train, variants
from aejax.data import synthetic
from aejax.data.ratings import Rows

LAYOUTS = {"one": None, "data4_members2": (2, 4), "data8": (1, 8)}


def densify_matches(rows: Rows) -> bool:
  """The sharded densify of two members' batches equals the host's."""
  mesh = parallel.make_mesh(members=2, data=4)
  device_rows = parallel.put_rows(rows, mesh)
  densify = parallel.densifier(mesh, rows, 8, rows.n_columns)
  row_ids = np.array(
    [[0, 5, 3, -1, 7, 2, 9, 11], [4, 4, 1, 6, 10, 8, -1, -1]], np.int32
  )
  values, mask = jax.jit(
    jax.vmap(densify, in_axes=(None, 0), spmd_axis_name=parallel.MEMBERS)
  )(device_rows, jnp.asarray(row_ids))
  expected = [rows.densify(ids) for ids in row_ids]
  split = jax.sharding.PartitionSpec(parallel.MEMBERS, parallel.DATA)
  return values.sharding.spec == split and all(
    np.array_equal(values[m], expected[m][0])
    and np.array_equal(mask[m], expected[m][1])
    for m in range(2)
  )


def restored_is_member_sharded(config, data, workdir, mesh, epoch) -> bool:
  """``resume.restore`` under ``mesh`` gives every leaf the member sharding."""
  rows = Rows.from_ratings(data.train, config.orientation)
  members = variants.members(config)
  program = train.make_program(config, rows.n_columns, members)
  states, hyper = train.init_members(
    program, members, fit.initial_output_bias(config, rows)
  )
  states, _, _ = parallel.place(mesh, states, hyper, rows)
  # With a validation set the checkpoint also holds each member's best.
  best = parallel.put(
    selection.init_best(states.params), parallel.member_sharding(mesh)
  )
  restored = resume.restore(workdir, epoch, {"states": states, "best": best})
  wanted = parallel.member_sharding(mesh)
  leaves = jax.tree.leaves(restored)
  return len(leaves) > 3 and all(
    leaf.sharding.is_equivalent_to(wanted, leaf.ndim) for leaf in leaves
  )


def main() -> None:
  assert jax.device_count() == 8, jax.devices()
  # 50 users in batches of 8: the last batch holds 2 rows, so some devices
  # of the data axis densify a share of padding only.
  shape = synthetic.Shape(50, 30, 600, min_per_user=3)
  data = synthetic.load(shape, seed=3)
  config = variants.get_config(
    "denoising",
    dataset="ml-100k",
    split="random",
    hidden_sizes=(6,),
    epochs=3,
    batch_size=8,
    eval_batch_size=16,
    seeds=2,
    ensemble=True,
    valid_fraction=0.2,
    learning_rate=1e-2,
    sparsity_weight=0.1,
  )
  out = {"densify_matches": densify_matches(Rows.from_ratings(data.train))}
  with tempfile.TemporaryDirectory() as folder:
    for name, layout in LAYOUTS.items():
      mesh = None if layout is None else parallel.make_mesh(*layout)
      workdir = pathlib.Path(folder) / name
      results = fit.fit(config, data, workdir, mesh=mesh)
      out[name] = report.read_metrics(workdir / "metrics.jsonl")
      out[f"{name} results"] = {
        "member_test_rmse": [m["test_rmse"] for m in results["members"]],
        "ensemble_test_rmse": results["ensemble_test_rmse"],
        "selected_epochs": [m["selected_epoch"] for m in results["members"]],
      }
    mesh = parallel.make_mesh(*LAYOUTS["data4_members2"])
    workdir = pathlib.Path(folder) / "resumed"
    fit.fit(dataclasses.replace(config, epochs=2), data, workdir, mesh=mesh)
    resumed = fit.fit(config, data, workdir, mesh=mesh)
    out["resumed"] = report.read_metrics(workdir / "metrics.jsonl")
    out["resumed results"] = {
      "member_test_rmse": [m["test_rmse"] for m in resumed["members"]],
      "ensemble_test_rmse": resumed["ensemble_test_rmse"],
      "selected_epochs": [m["selected_epoch"] for m in resumed["members"]],
    }
    out["restored_member_sharded"] = restored_is_member_sharded(
      config, data, workdir, mesh, config.epochs
    )
  json.dump(out, sys.stdout)


if __name__ == "__main__":
  main()

"""Meshes: flag parsing, layout checks, and equality with one device."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest
from test_cli import run

from aejax import parallel

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.parametrize(
  ("text", "expected"),
  [
    ("members:2,data:4", {"members": 2, "data": 4}),
    ("data:8", {"members": 1, "data": 8}),
    (" members:2 ", {"members": 2, "data": 1}),
    ("data:-1,members:2", {"members": 2, "data": -1}),
  ],
)
def test_parse_mesh_shape(text, expected):
  assert parallel.parse_mesh_shape(text) == expected


@pytest.mark.parametrize(
  ("text", "message"),
  [
    ("model:2", "mesh axis 'model:2' must be name:size"),
    ("data", "mesh axis 'data' must be name:size"),
    ("data:x", "mesh axis data: 'x' is not an integer"),
    ("data:0", "mesh axis data must be positive or -1, not 0"),
    ("data:2,data:2", "mesh axis 'data' given twice"),
    ("data:-1,members:-1", "only one mesh axis may be -1"),
  ],
)
def test_parse_mesh_shape_names_bad_values(text, message):
  with pytest.raises(ValueError, match=message):
    parallel.parse_mesh_shape(text)


def test_one_device_mesh_and_no_mesh():
  assert parallel.mesh_from_flag("") is None
  mesh = parallel.mesh_from_flag("data:-1")
  assert mesh.shape == {"members": 1, "data": 1}
  assert parallel.describe(mesh) == "members:1 x data:1"
  with pytest.raises(ValueError, match="members:2 x data:1 does not fit"):
    parallel.make_mesh(members=2)


def test_check_layout_names_what_does_not_split():
  mesh = parallel.make_mesh()
  parallel.check_layout(mesh, 3, {"batch_size": 5})
  parallel.check_layout(None, 3, {"batch_size": 5})

  # Only the mesh's shape matters, so a stand-in of 2 x 4 devices will do.
  mesh_2x4 = types.SimpleNamespace(shape={"members": 2, "data": 4})
  with pytest.raises(ValueError, match="3 members do not split over"):
    parallel.check_layout(mesh_2x4, 3, {"batch_size": 8})
  with pytest.raises(ValueError, match="eval_batch_size 6 does not split"):
    parallel.check_layout(mesh_2x4, 2, {"batch_size": 8, "eval_batch_size": 6})


def test_eight_cpu_devices_match_one_device():
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  result = subprocess.run(
    [sys.executable, os.path.join(HERE, "mesh_equivalence.py")],
    capture_output=True,
    text=True,
    env=env,
    timeout=300,
    check=False,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  out = json.loads(result.stdout)
  assert out["densify_matches"]
  reference = out["one"]
  assert len(reference) == 3
  for layout in ("data4_members2", "data8"):
    records = out[layout]
    assert len(records) == len(reference)
    for got, want in zip(records, reference, strict=True):
      for key in want:
        if key in ("epoch", "seconds"):
          continue
        np.testing.assert_allclose(
          got[key], want[key], rtol=0, atol=1e-4, err_msg=f"{layout} {key}"
        )
    # The test figures, scored once after training, of each member and
    # of their ensemble (mixed across the members axis).
    got, want = out[f"{layout} results"], out["one results"]
    assert got["selected_epochs"] == want["selected_epochs"]
    for key in ("member_test_rmse", "ensemble_test_rmse"):
      np.testing.assert_allclose(got[key], want[key], rtol=0, atol=1e-4)
  # Two members that learn apart, so a mix-up of members would show.
  final = out["one results"]["member_test_rmse"]
  assert abs(final[0] - final[1]) > 1e-4
  # Stopped after epoch 2 and resumed on the same mesh: the epochs of the
  # uninterrupted run, bitwise, from a state restored with the members
  # split over the mesh.
  strip = lambda records: [
    {k: v for k, v in r.items() if k != "seconds"} for r in records
  ]
  assert strip(out["resumed"]) == strip(out["data4_members2"])
  # The kept parameters and the early-stopping state survive the resume.
  assert out["resumed results"] == out["data4_members2 results"]
  assert out["restored_member_sharded"]


def test_bad_mesh_flag_gives_one_line_and_status_2(tiny_split, tmp_path):
  result = run(
    f"--data_dir={tiny_split}",
    f"--workdir={tmp_path / 'run'}",
    "--mesh=members:3",
    cache=tmp_path / "cache",
  )
  assert result.returncode == 2
  assert "members:3 x data:1 does not fit the 1 devices" in result.stderr
  assert "Traceback" not in result.stderr
  assert not (tmp_path / "run").exists()


def test_distributed_settings_go_together():
  assert parallel.initialize_distributed() is False
  with pytest.raises(ValueError, match="go together; got None, 2, None"):
    parallel.initialize_distributed(num_processes=2)

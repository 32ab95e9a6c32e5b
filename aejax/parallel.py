"""Device meshes and shardings: members over devices, batch rows over devices.

A run on several devices uses a ``jax.sharding.Mesh`` with two axes:

- ``members``: the ensemble members (the leading axis of every trained
  quantity) are split across this axis; each device trains its members.
- ``data``: the rows of every batch are split across this axis. Each device
  densifies only its share of a batch from the CSR rows, which every device
  holds; parameters are replicated along ``data`` and XLA's SPMD partitioner
  adds the reductions over it (gradients, loss normalisers, metrics).

The global batch and the loss are the same as on one device, so a mesh
changes results only by the order of floating-point sums. With no mesh the
training code runs exactly as on a single device.

Several processes (hosts) join one mesh through ``jax.distributed``; each
process places the arrays on its own devices (``put``) and its devices
densify their share of every batch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from aejax import batching
from aejax.data.ratings import Rows

MEMBERS = "members"
DATA = "data"
AXES = (MEMBERS, DATA)


def parse_mesh_shape(text: str) -> dict[str, int]:
  """``"members:2,data:4"`` -> ``{"members": 2, "data": 4}``.

  An axis left out has size 1; one axis may be ``-1`` to take every device
  the other leaves (``"data:-1"`` is pure data parallelism).

  Args:
    text: comma-separated ``name:size`` parts, names from ``AXES``.

  Returns:
    The size of every axis of ``AXES``, in that order.

  Raises:
    ValueError: an unknown axis, a repeated axis, or a size that is not a
      positive integer (or -1), named in the message.
  """
  shape = {}
  for part in (p.strip() for p in text.split(",") if p.strip()):
    name, sep, size = part.partition(":")
    name = name.strip()
    if not sep or name not in AXES:
      raise ValueError(
        f"mesh axis {part!r} must be name:size with name in {', '.join(AXES)}"
      )
    if name in shape:
      raise ValueError(f"mesh axis {name!r} given twice in {text!r}")
    try:
      value = int(size)
    except ValueError:
      message = f"mesh axis {name}: {size!r} is not an integer"
      raise ValueError(message) from None
    if value < 1 and value != -1:
      raise ValueError(f"mesh axis {name} must be positive or -1, not {value}")
    shape[name] = value
  if list(shape.values()).count(-1) > 1:
    raise ValueError(f"only one mesh axis may be -1 in {text!r}")
  return {name: shape.get(name, 1) for name in AXES}


def make_mesh(
  members: int = 1,
  data: int = 1,
  devices: list[jax.Device] | None = None,
) -> Mesh:
  """A ``(members, data)`` mesh over ``devices`` (default: all devices).

  ``members * data`` must equal the number of devices; one size may be -1
  to fill in the rest.

  Args:
    members: devices along the ``members`` axis, or -1.
    data: devices along the ``data`` axis, or -1.
    devices: the devices, in the order of every process (default
      ``jax.devices()``).

  Returns:
    The mesh, with axes ``("members", "data")``.

  Raises:
    ValueError: the sizes do not match the number of devices.
  """
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices)
  if members == -1 and data > 0 and n % data == 0:
    members = n // data
  if data == -1 and members > 0 and n % members == 0:
    data = n // members
  if members < 1 or data < 1 or members * data != n:
    raise ValueError(
      f"a mesh of members:{members} x data:{data} does not fit the {n} "
      "devices at hand"
    )
  if devices == list(jax.devices()):
    # Lets JAX order the devices for the hardware's interconnect.
    types = (jax.sharding.AxisType.Auto,) * 2
    return jax.make_mesh((members, data), AXES, axis_types=types)
  return Mesh(np.asarray(devices, dtype=object).reshape(members, data), AXES)


def mesh_from_flag(text: str) -> Mesh | None:
  """The mesh a ``--mesh`` flag asks for; ``None`` for ``""`` (one device).

  Args:
    text: the flag's value (see ``parse_mesh_shape``).

  Returns:
    ``make_mesh`` of the parsed sizes, or None for blank text.

  Raises:
    ValueError: from ``parse_mesh_shape`` or ``make_mesh``.
  """
  if not text.strip():
    return None
  shape = parse_mesh_shape(text)
  return make_mesh(shape[MEMBERS], shape[DATA])


def describe(mesh: Mesh | None) -> str:
  """``"members:2 x data:4"``, or ``"one device"`` without a mesh.

  Args:
    mesh: the mesh, or None.

  Returns:
    The sizes of the mesh's axes, for logs and results.
  """
  if mesh is None:
    return "one device"
  return " x ".join(f"{name}:{mesh.shape[name]}" for name in AXES)


def check_layout(
  mesh: Mesh | None, n_members: int, batch_sizes: dict[str, int]
) -> None:
  """Checks that the members and batches split evenly over the mesh.

  Args:
    mesh: the mesh, or None (always fine).
    n_members: members trained together.
    batch_sizes: batch sizes by name (e.g. ``batch_size``,
      ``eval_batch_size``); each must split over the ``data`` axis.

  Raises:
    ValueError: naming the value that does not divide.
  """
  if mesh is None:
    return
  n_member_devices, n_data_devices = mesh.shape[MEMBERS], mesh.shape[DATA]
  if n_members % n_member_devices:
    raise ValueError(
      f"{n_members} members do not split over the mesh's members axis of "
      f"{n_member_devices} devices"
    )
  for name, size in batch_sizes.items():
    if size % n_data_devices:
      raise ValueError(
        f"{name} {size} does not split over the mesh's data axis of "
        f"{n_data_devices} devices"
      )


def member_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (member) axis split over ``members``, replicated over ``data``.

  Args:
    mesh: a mesh from ``make_mesh``.

  Returns:
    ``NamedSharding(mesh, PartitionSpec("members"))``.
  """
  return NamedSharding(mesh, PartitionSpec(MEMBERS))


def replicated(mesh: Mesh) -> NamedSharding:
  """A full copy on every device of the mesh.

  Args:
    mesh: a mesh from ``make_mesh``.

  Returns:
    ``NamedSharding(mesh, PartitionSpec())``.
  """
  return NamedSharding(mesh, PartitionSpec())


def _put_leaf(leaf: Any, sharding: NamedSharding) -> jax.Array:
  if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(
    leaf.dtype, jax.dtypes.prng_key
  ):
    impl = jax.random.key_impl(leaf)
    data = _put_leaf(jax.random.key_data(leaf), sharding)
    return jax.random.wrap_key_data(data, impl=impl)
  host = np.asarray(leaf)
  return jax.make_array_from_callback(
    host.shape, sharding, lambda index: host[index]
  )


def put(tree: Any, sharding: NamedSharding) -> Any:
  """Places every array of ``tree`` on the mesh under ``sharding``.

  Each process passes the same host values and materialises only the
  shards of its own devices (``jax.make_array_from_callback``), so this
  works across processes as well, without comparing the values between
  them. Typed PRNG keys keep their type.

  Args:
    tree: arrays (numpy, or JAX arrays that this process can read).
    sharding: where the arrays go.

  Returns:
    The same tree of global ``jax.Array``s.
  """
  return jax.tree.map(lambda leaf: _put_leaf(leaf, sharding), tree)


def densifier(
  mesh: Mesh | None, rows: Rows, batch_size: int, n_columns: int
) -> Callable[[batching.DeviceRows, jax.Array], tuple[jax.Array, jax.Array]]:
  """``densify(device_rows, row_ids) -> (values, mask)`` for batches of rows.

  Without a mesh this is ``batching.densify`` with the capacity of
  ``batch_size`` rows. With a mesh, each device of the ``data`` axis
  densifies its ``batch_size / data`` rows (a ``shard_map``), with the
  capacity of that many rows, and the result is split over ``data``.

  Args:
    mesh: the mesh, or None.
    rows: the host rows, which fix the capacity.
    batch_size: rows of a global batch.
    n_columns: width of a dense row.

  Returns:
    The function; under ``jax.vmap(..., spmd_axis_name="members")`` the
    member axis is split over ``members`` as well.
  """
  if mesh is None:
    return functools.partial(
      batching.densify,
      n_columns=n_columns,
      capacity=rows.batch_capacity(batch_size),
    )
  local_rows = batch_size // mesh.shape[DATA]
  local = functools.partial(
    batching.densify,
    n_columns=n_columns,
    capacity=rows.batch_capacity(local_rows),
  )
  return jax.shard_map(
    local,
    mesh=mesh,
    in_specs=(PartitionSpec(), PartitionSpec(DATA)),
    out_specs=(PartitionSpec(DATA), PartitionSpec(DATA)),
    check_vma=False,
  )


def initialize_distributed(
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
  from_environment: bool = False,
) -> bool:
  """Joins this process to a multi-process JAX run, if one is asked for.

  With ``coordinator_address``, ``num_processes`` and ``process_id`` all
  given, they are used as they are and no cluster is detected. With
  ``from_environment``, JAX reads them from ``JAX_COORDINATOR_ADDRESS`` and
  the cluster's own variables (Cloud TPU, SLURM, Open MPI, Kubernetes).
  Must run before anything else touches a device.

  Args:
    coordinator_address: ``host:port`` of process 0's coordinator.
    num_processes: the number of processes of the run.
    process_id: this process's index, from 0.
    from_environment: with none of the three given, let JAX read the
      settings from the environment; otherwise ignored.

  Returns:
    Whether ``jax.distributed.initialize`` was called.

  Raises:
    ValueError: only some of the three explicit settings are given.
  """
  explicit = (coordinator_address, num_processes, process_id)
  if all(value is None for value in explicit):
    if not from_environment:
      return False
    jax.distributed.initialize()
  elif any(value is None for value in explicit):
    raise ValueError(
      "coordinator_address, num_processes and process_id go together; got "
      f"{coordinator_address!r}, {num_processes!r}, {process_id!r}"
    )
  else:
    jax.distributed.initialize(
      coordinator_address=coordinator_address,
      num_processes=num_processes,
      process_id=process_id,
      cluster_detection_method="deactivate",
    )
  logging.info(
    "Process %d of %d, %d local of %d devices",
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
  )
  return True


def put_rows(rows: Rows, mesh: Mesh) -> batching.DeviceRows:
  """CSR rows replicated on every device of ``mesh`` (see ``put``).

  Args:
    rows: the host rows.
    mesh: the mesh.

  Returns:
    ``DeviceRows`` whose arrays are whole on every device.
  """
  # TODO: every device holds all rows (160 MB at ML-20M), since any row may
  # fall in any device's share of a shuffled batch - split the CSR over the
  # data axis, regrouped by each epoch's order, once it outgrows a device.
  return put(batching.DeviceRows.host(rows), replicated(mesh))


def place(
  mesh: Mesh | None, states: Any, hyper: Any, rows: Rows
) -> tuple[Any, Any, batching.DeviceRows]:
  """Puts a run's member states, hyper-parameters and rows on the devices.

  Without a mesh they go to the default device as they are; with one the
  members are split over ``members`` and the rows replicated.

  Args:
    mesh: the mesh, or None.
    states: the stacked member states (``train.TrainState``).
    hyper: the stacked per-member hyper-parameters.
    rows: the host CSR rows to train on.

  Returns:
    ``(states, hyper, device_rows)`` as the epoch function takes them.
  """
  if mesh is None:
    return states, hyper, batching.DeviceRows.put(rows)
  states, hyper = put((states, hyper), member_sharding(mesh))
  return states, hyper, put_rows(rows, mesh)

"""Mesh construction and logical-axis -> mesh-axis sharding (MaxText-style rules).

Parameters name their axes logically ('embed', 'mlp', ...); the config's `sharding_rules` say
which mesh axes ('data', 'fsdp', 'tensor') each logical axis is split over.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")
Rules = Sequence[tuple[str, str | Sequence[str] | None]]


class MeshError(ValueError):
    """The requested mesh does not fit the devices or the model's shapes."""


def mesh_shape(mesh_cfg, num_devices: int) -> tuple[int, int, int]:
    """Resolves `mesh.{data,fsdp,tensor}` (one may be -1) against the device count."""
    sizes = [int(mesh_cfg[a]) for a in MESH_AXES]
    if sizes.count(-1) > 1:
        raise MeshError("at most one of mesh.data, mesh.fsdp, mesh.tensor may be -1")
    if any(s == 0 or s < -1 for s in sizes):
        raise MeshError(f"mesh sizes must be positive or -1, got {dict(zip(MESH_AXES, sizes))}")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if num_devices % known:
            raise MeshError(
                f"mesh {dict(zip(MESH_AXES, sizes))} does not divide {num_devices} devices"
            )
        sizes[sizes.index(-1)] = num_devices // known
    if math.prod(sizes) != num_devices:
        raise MeshError(
            f"mesh data={sizes[0]} x fsdp={sizes[1]} x tensor={sizes[2]} = {math.prod(sizes)} "
            f"devices, but {num_devices} are available"
        )
    return tuple(sizes)


def num_slices(devices: Sequence[jax.Device]) -> int:
    """How many slices (ICI islands, joined by the data-center network) hold `devices`."""
    return len({getattr(d, "slice_index", 0) for d in devices})


def make_mesh(mesh_cfg, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """The (data, fsdp, tensor) mesh over `devices` (default: all), for training and for
    `genjax compile` alike. Over several slices the data axis spans them (only data
    parallelism crosses the slow network between slices): mesh.data must be a multiple of
    the slice count, and fsdp x tensor are laid out inside each slice."""
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(mesh_cfg, len(devices))
    slices = num_slices(devices)
    if slices > 1:
        return _multislice_mesh(shape, slices, devices)
    try:
        auto = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)  # GSPMD propagation
        return jax.make_mesh(shape, MESH_AXES, axis_types=auto, devices=devices)
    except (ValueError, NotImplementedError):  # topologies make_mesh cannot tile
        return Mesh(np.asarray(devices).reshape(shape), MESH_AXES)


def _multislice_mesh(shape: tuple[int, int, int], slices: int,
                     devices: Sequence[jax.Device]) -> Mesh:
    from jax.experimental import mesh_utils

    data, fsdp, tensor = shape
    if data % slices:
        raise MeshError(f"with {slices} slices the data axis must span them, but mesh.data="
                        f"{data} is not a multiple of {slices}; set --config.mesh.data={slices} "
                        "(or a multiple) and let fsdp or tensor be -1")
    try:
        grid = mesh_utils.create_hybrid_device_mesh(
            (data // slices, fsdp, tensor), (slices, 1, 1), devices,
            allow_split_physical_axes=True)
    except (ValueError, NotImplementedError, AssertionError) as e:
        raise MeshError(f"cannot lay mesh data={data // slices} x fsdp={fsdp} x tensor="
                        f"{tensor} over each of {slices} slices: {e}") from e
    return Mesh(grid, MESH_AXES)


def logical_to_spec(axes: Sequence[str | None], rules: Rules) -> PartitionSpec:
    """('batch', None, 'embed') -> P(('data', 'fsdp'), None, 'fsdp') minus repeated mesh axes."""
    table = {name: target for name, target in rules}
    used: set[str] = set()
    out = []
    for axis in axes:
        target = table.get(axis) if axis is not None else None
        if target is None:
            out.append(None)
            continue
        targets = (target,) if isinstance(target, str) else tuple(target)
        targets = tuple(t for t in targets if t not in used)
        used.update(targets)
        out.append(targets[0] if len(targets) == 1 else (targets or None))
    return PartitionSpec(*out)


def _check_divisible(name: str, shape, spec: PartitionSpec, mesh: Mesh) -> None:
    for dim, target in zip(shape, spec):
        if target is None:
            continue
        targets = (target,) if isinstance(target, str) else target
        n = math.prod(mesh.shape[t] for t in targets)
        if dim % n:
            raise MeshError(
                f"{name}: dimension of size {dim} cannot be split over mesh axes {targets} "
                f"(size {n}); change the model size or the mesh"
            )


def param_shardings(abstract_params, mesh: Mesh, rules: Rules, logical_axes=None):
    """NamedSharding for every parameter, from its logical axis names: `logical_axes(params)`
    (a pytree like params of name tuples), else Flax NNX `sharding` metadata, else replicated."""

    def named(path, shape, logical) -> NamedSharding:
        spec = logical_to_spec(tuple(logical), rules)
        spec = PartitionSpec(*spec, *([None] * (len(shape) - len(spec))))
        _check_divisible(jax.tree_util.keystr(path), shape, spec, mesh)
        return NamedSharding(mesh, spec)

    if logical_axes is None and isinstance(abstract_params, nnx.State):
        return jax.tree_util.tree_map_with_path(
            lambda path, var, logical: var.replace(named(path, var.shape, logical)),
            abstract_params, nnx.get_partition_spec(abstract_params),
            is_leaf=lambda x: isinstance(x, nnx.Variable))
    if logical_axes is None:
        return jax.tree.map(lambda _: NamedSharding(mesh, PartitionSpec()), abstract_params)
    return jax.tree_util.tree_map_with_path(
        lambda path, logical, x: named(path, x.shape, logical), logical_axes(abstract_params),
        abstract_params, is_leaf=lambda x: isinstance(x, tuple))


def batch_sharding(mesh: Mesh, rules: Rules, ndim: int = 2) -> NamedSharding:
    return NamedSharding(mesh, logical_to_spec(("batch",) + (None,) * (ndim - 1), rules))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def make_constrain(mesh: Mesh, rules: Rules):
    """`constrain(x, logical_axes)` for activations inside the model."""

    def constrain(x: jax.Array, axes: tuple[str | None, ...]) -> jax.Array:
        spec = logical_to_spec(axes, rules)
        for dim, target in zip(x.shape, spec):  # leave undivisible activations unconstrained
            if target is not None:
                targets = (target,) if isinstance(target, str) else target
                if dim % math.prod(mesh.shape[t] for t in targets):
                    return x
        return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))

    return constrain

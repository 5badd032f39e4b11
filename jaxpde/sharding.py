r"""Sharding batched checks across devices: one mesh axis, `"samples"`.

Certification is embarrassingly parallel: every sampled input and every configuration
is checked on its own, and the verdict is a maximum over them. `sharded_vmap(f)` is
`jax.vmap(f)` that, inside `devices_context(devices)` (or `jax.set_mesh(mesh)`) with a
`"samples"` axis of several devices, splits the batch across them with `jax.shard_map`
(padding it to a multiple of the device count with copies of its first entry) and gathers
the result, replicated on every device, so every host of a multi-host run can read it. Each entry is computed
by the same per-entry program as without a mesh; on CPU the results agree bit for bit
(`tests/test_sharding.py`).

`sample_mesh(devices)` builds the mesh and `devices_context(devices)` enters it for the
programs that `sharded_vmap` builds: their abstract mesh (`jax.sharding.use_abstract_mesh`,
so that `jax.jit` traces them apart from unsharded ones) and the devices that their
`jax.shard_map` runs on. Unlike `jax.set_mesh`, it leaves the operations outside these
programs on the default device: under `jax.set_mesh` every eager operation of a check
(norm bounds, step sizes, ...) runs replicated on every device of the mesh: the claims about
the explicit block, checked at the tests' budget on four CPU devices (two cores), took
17.8 and 21.0 s under `jax.set_mesh`, 10.6 and 14.8 s in this context (interleaved runs;
the same certificates). `jaxpde certify --devices all` uses both. `sharded_vmap` also
shards inside the user's own `jax.set_mesh(mesh)`. Several hosts: call
`jax.distributed.initialize()` first (`jaxpde certify --distributed`); then
`jax.devices()` lists the devices of every process and the mesh spans them all.

Reference: the JAX documentation, "Distributed arrays and automatic parallelization"
and "Manual parallelism with shard_map".
"""

import contextlib
import contextvars
import threading
from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

AXIS = "samples"


def _resolve(devices: str | int | Sequence[jax.Device]) -> list[jax.Device]:
    available = jax.devices()
    if devices == "all":
        return list(available)
    if isinstance(devices, str):
        try:
            devices = int(devices)
        except ValueError:
            raise ValueError(f"`devices` must be 'all', a count or a list of devices, got {devices!r}.") from None
    if isinstance(devices, int) and not isinstance(devices, bool):
        if not 1 <= devices <= len(available):
            raise ValueError(
                f"`devices` = {devices} must be between 1 and the {len(available)} visible devices "
                f"({available[0].platform}); for more CPU devices set "
                "XLA_FLAGS=--xla_force_host_platform_device_count=N before JAX starts."
            )
        return list(available[:devices])
    devices = list(devices)
    if not devices:
        raise ValueError("`devices` must name at least one device.")
    return devices


def sample_mesh(devices: str | int | Sequence[jax.Device] = "all") -> Mesh:
    """A one-axis mesh named `"samples"` over `devices`: `"all"` (every visible device,
    of every process after `jax.distributed.initialize`), a count (the first ones), or
    a list of devices."""
    chosen = _resolve(devices)
    return Mesh(chosen, (AXIS,), axis_types=(AxisType.Auto,))


# The mesh of the innermost `devices_context` of this thread (None outside one).
_SAMPLE_MESH: contextvars.ContextVar[Mesh | None] = contextvars.ContextVar("sample_mesh", default=None)
# The mesh that `devices_context` entered first for each abstract mesh: `jax.jit` traces a
# program once per abstract mesh, with the devices of that first mesh in its `jax.shard_map`.
_FIRST_MESHES: dict = {}
# The abstract meshes of the user's `jax.set_mesh` that `sharded_vmap` has sharded across: a
# program traced there has no devices in its `jax.shard_map`, so `devices_context` enters
# these meshes with `jax.set_mesh` too.
_SET_MESHES: set = set()
_MESHES_LOCK = threading.Lock()


@contextlib.contextmanager
def _sample_context(mesh: Mesh):
    token = _SAMPLE_MESH.set(mesh)
    try:
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            yield
    finally:
        _SAMPLE_MESH.reset(token)


def devices_context(devices: str | int | Sequence[jax.Device] | Mesh | None):
    """The context in which `sharded_vmap` shards across `sample_mesh(devices)` (or a given
    mesh): nothing for `None` and one device; operations outside `sharded_vmap` stay on
    the default device (see the module docstring). Configuration contexts are per thread:
    enter it in every thread that runs checks.

    In one process, every mesh of a given size must be on the same devices: `jax.jit`
    reuses a program traced for one mesh for every mesh of its shape. A `ValueError`
    otherwise."""
    if devices is None:
        return contextlib.nullcontext()
    mesh = devices if isinstance(devices, Mesh) else sample_mesh(devices)
    if mesh.size == 1:
        return contextlib.nullcontext()
    with _MESHES_LOCK:
        if mesh.abstract_mesh in _SET_MESHES:
            return jax.set_mesh(mesh)
        first = _FIRST_MESHES.setdefault(mesh.abstract_mesh, mesh)
    if first != mesh:  # the same abstract mesh on other devices
        raise ValueError(
            f"`devices` names {mesh.size} devices {_ids(mesh)}, but this process has sharded across "
            f"{_ids(first)} before: jax.jit keys the sharded programs on the number of devices alone. "
            f"Use one set of {mesh.size} devices per process (for example the first {mesh.size}: "
            f"devices={mesh.size})."
        )
    return _sample_context(mesh)


def _ids(mesh: Mesh) -> list[int]:
    return [device.id for device in mesh.devices.flat]


def shard_count() -> int:
    """The number of devices that `sharded_vmap` splits a batch across here (1 outside a
    mesh, and inside a shard already split)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or AXIS not in mesh.axis_names:
        return 1
    if dict(zip(mesh.axis_names, mesh.axis_types))[AXIS] == AxisType.Manual:
        return 1  # already inside the shard_map of an outer sharded_vmap
    return mesh.shape[AXIS]


def sharded_vmap(fn: Callable) -> Callable:
    """`jax.vmap(fn)` over the leading axis of every array argument, split across the
    `"samples"` devices of the current mesh (see the module docstring). Non-array
    leaves (static fields of modules) are passed through unbatched."""

    def batched(*args):
        shards = shard_count()
        dynamic, static = eqx.partition(args, eqx.is_array)

        def apply(*dynamic_args):
            return jax.vmap(lambda *a: fn(*eqx.combine(a, static)))(*dynamic_args)

        if shards == 1:
            return apply(*dynamic)
        sizes = {x.shape[0] for x in jax.tree.leaves(dynamic)}
        if len(sizes) != 1:
            raise ValueError(f"`sharded_vmap` needs one leading batch size for every array, got {sorted(sizes)}.")
        (count,) = sizes
        pad = -count % shards

        def padded(x):
            return jnp.concatenate([x, jnp.repeat(x[:1], pad, axis=0)]) if pad else x

        spec = PartitionSpec(AXIS)
        mesh = _SAMPLE_MESH.get()
        if mesh is None:  # inside the user's `jax.set_mesh` (or a fallback of `devices_context`)
            with _MESHES_LOCK:
                _SET_MESHES.add(jax.sharding.get_abstract_mesh())
        # check_vma=False: the per-entry programs mix sharded and replicated values in
        # `lax.switch` and `lax.scan` (every value is per entry; nothing is reduced across devices).
        out = jax.shard_map(apply, mesh=mesh, in_specs=(spec,) * len(dynamic), out_specs=spec, check_vma=False)(
            *jax.tree.map(padded, dynamic)
        )
        # Gather: replicated on every device (and every host).
        replicated = PartitionSpec() if mesh is None else NamedSharding(mesh, PartitionSpec())
        return jax.tree.map(lambda y: jax.lax.with_sharding_constraint(y[:count], replicated), out)

    return batched

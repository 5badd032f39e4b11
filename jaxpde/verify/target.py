r"""Certify or refute the Euclidean stability of any callable $u \mapsto u'$.

For a `DiffusionBlock` the theorem applies: its hypotheses (sector bound, step size)
are checked, and the falsifier must then find nothing; likewise for the networks of
`jaxpde.nn` through `jaxpde.nn.stability_certificate`. For any other callable no
theorem is available: the falsifier either finds a witness (refuted) or not
("not refuted", an empirical statement). Either way the report gives the empirical
Euclidean gain $\max\|f(u)\|/\|u\|$ and Lipschitz constant (lower bounds of the
suprema, with their witnesses). This is what `jaxpde certify --target` runs.
"""

import dataclasses
import math
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PRNGKeyArray

from ..blocks import DiffusionBlock
from .falsify import falsify_gain, falsify_lipschitz
from .lipschitz import block_lipschitz_bound, local_lipschitz
from .tolerance import Tolerance, gamma, norm_ratio_tolerance


def gain_tolerance(f: Callable, size: int, dtype) -> Tolerance:
    """Rounding tolerance of a computed ratio $\\|f(u)\\|/\\|u\\|$: the derived one for a
    `DiffusionBlock`, otherwise $\\gamma_{4(N+1)}$ (a few sums over N entries)."""
    if isinstance(f, DiffusionBlock):
        return norm_ratio_tolerance(f, dtype)
    value = gamma(4 * (size + 1), dtype)
    return Tolerance(value, f"gamma_(4(N+1)) with N = {size} (generic callable: no structure known)")


@dataclasses.dataclass(frozen=True)
class TargetReport:
    """Verdict on one callable: `status` is "certified" (a theorem's hypotheses hold
    and no counterexample was found), "violated" (a witness with gain above
    1 + tolerance), or "not refuted" (no theorem applies; nothing found)."""

    name: str
    in_shape: tuple[int, ...]
    status: str
    gain: float
    gain_sampled: float
    lipschitz: float
    local_lipschitz: float
    tolerance: float
    tolerance_derivation: str
    restarts: int
    steps: int
    seconds: float
    hypotheses: dict[str, str]
    certified_gain_bound: float | None = None
    certified_lipschitz_bound: float | None = None
    witness: list[float] | None = None

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        data["in_shape"] = list(self.in_shape)
        return data

    def markdown(self) -> str:
        lines = [
            f"# `{self.name}`: {self.status}",
            "",
            f"Input shape {self.in_shape}; falsifier: {self.restarts} restarts x {self.steps} Adam steps.",
            "",
            "| quantity | empirical (lower bound) | certified upper bound |",
            "| --- | ---: | ---: |",
            f"| Euclidean gain max ||f(u)||/||u|| | {self.gain:.12g} | {_or_na(self.certified_gain_bound)} |",
            (
                f"| Lipschitz constant | {max(self.lipschitz, self.local_lipschitz):.12g} "
                f"| {_or_na(self.certified_lipschitz_bound)} |"
            ),
            "",
            f"Tolerance {self.tolerance:.3g}: {self.tolerance_derivation}.",
            "",
        ]
        lines += [f"- {k}: {v}" for k, v in self.hypotheses.items()]
        return "\n".join(lines) + "\n"


def _network_certificate(f):
    """The `jaxpde.nn.stability_certificate` of a jaxpde network, else `None`."""
    from ..nn import (  # nn builds on verify
        BlockStack,
        RecurrentImplicitBlock,
        ResNet,
        stability_certificate,
    )

    return stability_certificate(f) if isinstance(f, (BlockStack, RecurrentImplicitBlock, ResNet)) else None


def _or_na(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.12g}"


def certify_callable(
    f: Callable,
    in_shape: tuple[int, ...],
    key: PRNGKeyArray | None = None,
    *,
    name: str = "callable",
    restarts: int = 256,
    steps: int = 100,
    radii: tuple[float, float] = (1e-2, 1e2),
    dtype=None,
) -> TargetReport:
    """Run the falsifier on the norm gain and the Lipschitz quotient of `f`.

    **Arguments:**

    - `f`: any callable mapping an array of shape `in_shape` to one of the same shape.
    - `in_shape`: shape of one input sample.
    - `key`: PRNG key (default `jax.random.key(0)`).
    - `restarts`, `steps`: the falsifier's budget.
    - `radii`: input norms are drawn log-uniformly from this range.

    **Returns:** a `TargetReport`.
    """
    start = time.perf_counter()
    key = jax.random.key(0) if key is None else key
    dtype = jnp.result_type(float) if dtype is None else dtype
    in_shape = tuple(int(s) for s in in_shape)
    probe = jax.eval_shape(f, jax.ShapeDtypeStruct(in_shape, dtype))
    if not hasattr(probe, "shape") or tuple(probe.shape) != in_shape:
        raise ValueError(
            f"`f` must map arrays of shape {in_shape} to the same shape (a stability "
            f"certificate compares ||f(u)|| with ||u||); it returns {probe}."
        )
    gain_key, lipschitz_key, local_key = jax.random.split(key, 3)
    gain = falsify_gain(f, in_shape, gain_key, restarts=restarts, steps=steps, radii=radii, dtype=dtype)
    pairs = falsify_lipschitz(f, in_shape, lipschitz_key, restarts=restarts, steps=steps, radii=radii, dtype=dtype)
    local = local_lipschitz(f, pairs.witness[0], local_key)
    tolerance = gain_tolerance(f, math.prod(in_shape), dtype)
    worst = float(gain.worst)
    hypotheses: dict[str, str] = {}
    certified_gain = certified_lipschitz = None
    if not worst <= 1 + tolerance.value or int(gain.nonfinite) > 0:
        status = "violated"
    elif isinstance(f, DiffusionBlock):
        fraction = float(f.step_fraction())
        sector = float(f.flux.sector_bound())
        hypotheses["sector condition"] = f"0 <= Phi(s)/s <= L = {sector:.6g} ({type(f.flux).__name__})"
        hypotheses["step size"] = f"tau / (2 / (L ||K||^2)) = {fraction:.6g} (must be <= 1)"
        status = "certified" if fraction <= 1 + 64 * float(np.finfo(dtype).eps) else "not refuted"
        if status == "certified":
            certified_gain = 1.0
        certified_lipschitz = float(block_lipschitz_bound(f))
    elif (network := _network_certificate(f)) is not None and network.certified:
        hypotheses["theorem"] = network.reason
        status, certified_gain = "certified", network.gain_bound
        certified_lipschitz = network.lipschitz_bound
    else:
        status = "not refuted"
        hypotheses["theorem"] = (
            network.reason if network is not None else "none applies to a generic callable: the verdict is empirical"
        )
    hypotheses["non-finite evaluations"] = str(int(gain.nonfinite) + int(pairs.nonfinite))
    witness = np.asarray(gain.witness).reshape(-1).tolist() if status == "violated" else None
    return TargetReport(
        name=name, in_shape=in_shape, status=status, gain=worst, gain_sampled=float(gain.sampled),
        lipschitz=float(pairs.worst), local_lipschitz=float(local.lower), tolerance=tolerance.value,
        tolerance_derivation=tolerance.derivation, restarts=restarts, steps=steps,
        seconds=time.perf_counter() - start, hypotheses=hypotheses,
        certified_gain_bound=certified_gain, certified_lipschitz_bound=certified_lipschitz, witness=witness,
    )

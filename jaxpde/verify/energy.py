"""Monitors along one input or one trajectory: Euclidean gain, norm decay, mass,
variance, convex sums and the flux energy (Lyapunov functionals)."""

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._bounds.norms import l2_norm
from .._checks import check_signal
from ..fluxes import AbstractFlux
from ..operators import AbstractOperator


def euclidean_gain(f: Callable[[Array], Array], u: Float[Array, "*shape"]) -> Float[Array, ""]:
    """$\\|f(u)\\| / \\|u\\|$: above 1 means $f$ amplified this input."""
    return l2_norm(f(u)) / l2_norm(u)


def norm_ratios(trajectory: Float[Array, "steps *shape"]) -> Float[Array, " steps-1"]:
    """$\\|u^{k+1}\\| / \\|u^k\\|$ along a trajectory (first axis: time)."""
    norms = jnp.sqrt(jnp.sum(trajectory.reshape(trajectory.shape[0], -1) ** 2, axis=1))
    return norms[1:] / norms[:-1]


def worst_norm_ratio(trajectory: Float[Array, "steps *shape"]) -> Float[Array, ""]:
    """The largest one-step norm ratio; at most 1 (+ rounding) for a stable scheme."""
    return jnp.max(norm_ratios(trajectory))


# --- Lyapunov functionals and monitors --------------------------------------------
#
# Functionals act on ONE sample (all axes); along a trajectory use
# `trajectory_values(functional, trajectory)` and `largest_increase(values)`.


def mass(u: Float[Array, "*shape"]) -> Float[Array, ""]:
    r"""The mass $\sum_i u_i$ of one sample: the sum over all entries (not the mean).

    Preserved by the explicit step when $K$ annihilates constants
    (`proofs/mass-conservation.md`); multiply by the grid spacing $h$ for the integral.

    **Arguments:**

    - `u`: one sample, any shape.

    **Returns:**

    $\sum_i u_i$, a scalar.
    """
    return jnp.sum(u)


def variance(u: Float[Array, "*shape"]) -> Float[Array, ""]:
    r"""The variance $\|u - \bar u\,\mathbb{1}\|^2 = \sum_i (u_i - \bar u)^2$, $\bar u$ the mean.

    Not divided by the number of entries. A Lyapunov functional of the explicit step
    $u - \tau K^\top\Phi(Ku)$ when $K\mathbb{1} = 0$ and $0 < \tau \le 2/(L\|K\|^2)$
    (`proofs/lyapunov-functionals.md`; Weickert, *Anisotropic Diffusion in Image
    Processing*, 1998, Ch. 4).

    **Arguments:**

    - `u`: one sample, any shape (the mean is over all entries).

    **Returns:**

    $\sum_i (u_i - \bar u)^2$, a scalar $\ge 0$.
    """
    centred = u - jnp.mean(u)
    return jnp.sum(centred * centred)


def convex_sum(u: Float[Array, "*shape"], r: Callable[[Array], Array]) -> Float[Array, ""]:
    r"""$\sum_i r(u_i)$ for a scalar function $r$, applied elementwise.

    For convex $r$ this is a Lyapunov functional of the explicit step with $K = D_1$
    and $0 < \tau \le h^2/(2L)$ (a symmetric doubly stochastic step; Weickert, 1998;
    `proofs/lyapunov-functionals.md`). Convexity is the caller's hypothesis: it is not
    checked.

    **Arguments:**

    - `u`: one sample, any shape.
    - `r`: an elementwise function, e.g. `jnp.square`, `jnp.abs`, `jnp.exp`.

    **Returns:**

    $\sum_i r(u_i)$, a scalar.
    """
    if not callable(r):
        raise TypeError(f"`r` must be an elementwise function, e.g. jnp.square; got {r!r}.")
    values = r(u)
    if jnp.shape(values) != jnp.shape(u):
        raise ValueError(
            f"`r` must act elementwise: r(u) has shape {jnp.shape(values)}, u has shape {jnp.shape(u)}."
        )
    return jnp.sum(values)


def flux_energy(op: AbstractOperator, flux: AbstractFlux, u: Float[Array, "*shape"]) -> Float[Array, ""]:
    r"""The energy $E(u) = \sum_j \Psi((Ku)_j)$, $\Psi(s) = \int_0^s \Phi$ the flux potential.

    $\nabla E(u) = K^\top\Phi(Ku)$, so the explicit step $u - \tau K^\top\Phi(Ku)$ is a
    gradient step on $E$, and $E(u^{k+1}) \le E(u^k)$ for $0 < \tau \le 2/(b\|K\|^2)$,
    $b = \sup\Phi' \le \mathrm{Lip}(\Phi)$, even when $E$ is not convex
    (`proofs/energy-descent.md`; arXiv:2103.15419, Section 2).

    **Arguments:**

    - `op`: the linear operator $K$.
    - `flux`: the flux $\Phi$ (its `potential` is $\Psi$).
    - `u`: one sample of shape `op.in_shape`.

    **Returns:**

    $E(u)$, a scalar $\ge 0$.
    """
    if not isinstance(op, AbstractOperator):
        raise TypeError(f"`op` must be a jaxpde operator, got {type(op).__name__}.")
    if not isinstance(flux, AbstractFlux):
        raise TypeError(f"`flux` must be a jaxpde flux, got {type(flux).__name__}.")
    check_signal("u", u, op.in_shape)
    return jnp.sum(flux.potential(op(u)))


def trajectory_values(
    functional: Callable[[Array], Array], trajectory: Float[Array, "steps *shape"]
) -> Float[Array, " steps"]:
    r"""A scalar functional at every time of a trajectory: $(F(u^0), F(u^1), \dots)$.

    **Arguments:**

    - `functional`: maps one sample to a scalar, e.g. `variance` or
      `functools.partial(flux_energy, op, flux)`.
    - `trajectory`: the samples $u^k$ stacked along the first axis (time).

    **Returns:**

    The values $F(u^k)$, one per time (`jax.vmap` over the first axis).
    """
    if not callable(functional):
        raise TypeError(f"`functional` must map one sample to a scalar, got {functional!r}.")
    if jnp.ndim(trajectory) < 1 or jnp.shape(trajectory)[0] < 1:
        raise ValueError(
            f"`trajectory` must stack at least one sample along its first axis (time), got shape {jnp.shape(trajectory)}."
        )
    return jax.vmap(functional)(trajectory)


def largest_increase(values: Float[Array, " steps"]) -> Float[Array, ""]:
    r"""$\max_k (v_{k+1} - v_k)$: at most 0 (up to rounding) for a Lyapunov functional.

    **Arguments:**

    - `values`: a functional along a trajectory (see `trajectory_values`), at least two.

    **Returns:**

    The largest one-step increase, a scalar (negative when the values strictly decrease).
    """
    if jnp.ndim(values) != 1 or jnp.shape(values)[0] < 2:
        raise ValueError(f"`values` must be one-dimensional with at least two entries, got shape {jnp.shape(values)}.")
    return jnp.max(values[1:] - values[:-1])

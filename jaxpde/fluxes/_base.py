r"""The base class of fluxes $\Phi(s) = g(s^2)\,s$: `AbstractFlux`, with the default
(quadrature) potential $\Psi(s) = s^2\int_0^1 t\,g(t^2 s^2)\,dt$ of a user flux."""

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

# The default (quadrature) potential of a user flux: Gauss-Legendre with this many nodes
# on each of this many dyadic panels [0, 2^-(P-1)], ..., [1/4, 1/2], [1/2, 1] of [0, 1].
POTENTIAL_QUADRATURE_NODES = 12
POTENTIAL_QUADRATURE_PANELS = 16


def _dyadic_gauss_legendre() -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of the composite Gauss-Legendre rule on dyadic panels of $[0, 1]$."""
    x, w = np.polynomial.legendre.leggauss(POTENTIAL_QUADRATURE_NODES)
    edges = np.concatenate([[0.0], 2.0 ** -np.arange(POTENTIAL_QUADRATURE_PANELS - 1, -1, -1)])
    low, high = edges[:-1, None], edges[1:, None]
    return ((high - low) * (x + 1) / 2 + low).ravel(), ((high - low) * w / 2).ravel()


class AbstractFlux(eqx.Module):
    """A flux $\\Phi(s) = g(s^2)\\,s$ with $g \\ge 0$, applied elementwise."""

    @abc.abstractmethod
    def diffusivity(self, s2: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        """The diffusivity $g$ evaluated at $s^2$."""

    @abc.abstractmethod
    def sector_bound(self) -> Float[Array, ""]:
        """$L = \\sup_{s \\ne 0} \\Phi(s)/s$ (the sector $0 \\le \\Phi(s)/s \\le L$)."""

    @abc.abstractmethod
    def derivative_range(self) -> tuple[Float[Array, ""], Float[Array, ""]]:
        """Bounds $a \\le \\Phi'(s) \\le b$ for all $s$ (the tightest known)."""

    def __call__(self, s: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        return self.diffusivity(s * s) * s

    def potential(self, s: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        r"""The potential (energy density) $\Psi$ with $\Psi' = \Phi$, $\Psi(0) = 0$:

        $$\Psi(s) = \int_0^s \Phi(t)\,dt = s^2 \int_0^1 t\, g(t^2 s^2)\,dt \ge 0.$$

        $E(u) = \sum_i \Psi((Ku)_i)$ has the gradient $K^\top \Phi(Ku)$, so the explicit
        step $u - \tau K^\top\Phi(Ku)$ is a gradient step on $E$. The fluxes of
        `jaxpde.fluxes` override this method with closed forms. This default, for user fluxes,
        is a quadrature of the integral over $t \in [0, 1]$: Gauss-Legendre with
        `POTENTIAL_QUADRATURE_NODES` nodes on each of `POTENTIAL_QUADRATURE_PANELS` dyadic
        panels $[0, 2^{-15}], \dots, [\frac14, \frac12], [\frac12, 1]$, so that a change of $g$
        at any scale between $|s|/2^{15}$ and $|s|$ is resolved (on the fluxes of
        `jaxpde.fluxes`: relative error below $10^{-14}$, and $4 \cdot 10^{-7}$ for Weickert's steep
        $g$). It is an approximation, and its derivative is the quadrature of $\Phi$,
        not `self(s)` exactly: override it with a closed form where one is known.

        **Arguments:**

        - `s`: values $s$ (any shape), e.g. $Ku$.

        **Returns:**

        $\Psi(s)$, elementwise, of the shape and dtype of `s`.

        Reference: arXiv:2103.15419, Section 2 (the energy of the diffusion flux).
        """
        nodes, weights = _dyadic_gauss_legendre()
        shape = (1,) * s.ndim + (nodes.size,)
        t = jnp.asarray(nodes.reshape(shape), s.dtype)
        w = jnp.asarray(weights.reshape(shape), s.dtype)
        s2 = s * s
        return s2 * jnp.sum(w * t * self.diffusivity(t * t * s2[..., None]), axis=-1)

    def lipschitz(self) -> Float[Array, ""]:
        """$\\mathrm{Lip}(\\Phi) = \\sup_s |\\Phi'(s)| = \\max(|a|, |b|)$."""
        low, high = self.derivative_range()
        return jnp.maximum(jnp.abs(low), jnp.abs(high))

    def is_monotone(self) -> bool:
        """Whether $\\Phi' \\ge 0$ everywhere (needs concrete parameters)."""
        low, _ = self.derivative_range()
        return bool(low >= 0)

    def in_domain(self) -> "AbstractFlux":
        r"""This flux with every parameter mapped into the domain where `sector_bound()` and
        `derivative_range()` hold: here the magnitudes of the floating-point parameters
        (positive scales $L$, $\lambda$, $\varepsilon$). Trainable networks evaluate their
        fluxes through this map, so that training cannot leave the sector. Fluxes whose
        bounds hold for every parameter value (`RadialBasisFlux`) return themselves."""
        return jax.tree.map(lambda x: jnp.abs(x) if eqx.is_inexact_array(x) else x, self)

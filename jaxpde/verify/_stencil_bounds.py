r"""Two-sided bounds of the norm of a 1-D stencil (or derivative) from its symbol.

Upper: `symbol_peak` (periodic: $\max_q\|A(2\pi q/n)\|$; neumann / dirichlet: the
supremum of $\|A(\theta)\|$ from a grid). Lower: power iteration from the real Fourier
mode $\mathrm{Re}(v e^{i\theta^* t})$ at the maximising frequency, $v$ the top right
singular vector of $A(\theta^*)$ (sine-windowed for neumann / dirichlet), certified by
`operator_certified_lower` (`proofs/spectral-norm-bounds.md`, Steps 3 and 5).
"""

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._bounds import l2_norm, top_right_vector
from .._bounds.symbols import check_index_range, phase_table, symbol_peak, symbol_period
from ..operators import AbstractOperator, Stencil
from ._power import STALL, operator_certified_lower, power_iterate


def fourier_start(stencil: Stencil, q: Array, symbol_at_q: Array, period: int, iterations: int) -> Array:
    """Real Fourier mode $\\mathrm{Re}(v e^{i\\theta^* t})$ (or its imaginary part), with a
    sine window for neumann / dirichlet."""
    n = stencil.n
    check_index_range(period // 2 + 1, n)
    v = top_right_vector(symbol_at_q, iterations)
    table = phase_table(period, stencil.kernel.dtype)
    phases = table[(q.astype(jnp.int32) * jnp.arange(n, dtype=jnp.int32)) % period]
    mode = v[:, None] * phases[None, :]
    real, imag = jnp.real(mode), jnp.imag(mode)
    x = jnp.where(l2_norm(real) >= l2_norm(imag), real, imag)
    if stencil.boundary != "periodic":
        window = np.sin(np.pi * (np.arange(n) + 1) / (n + 1))
        x = x * jnp.asarray(window, x.dtype)[None, :]
    x = x.reshape(stencil.in_shape)
    return x / l2_norm(x)


@eqx.filter_jit
def _stencil_lower(op: AbstractOperator, stencil: Stencil, q: Array, symbol_at_q: Array, period: int, iterations: int, gram_iterations: int):
    """Certified lower bound and its vector: power iteration from the Fourier start."""
    start = fourier_start(stencil, q, symbol_at_q, period, gram_iterations)
    ratio, vector = power_iterate(op, op.T, start, iterations, STALL)
    return operator_certified_lower(op, ratio), vector


def stencil_bounds(
    op: AbstractOperator, stencil: Stencil, iterations: int, gram_iterations: int
) -> tuple[Float[Array, ""], Float[Array, ""], Float[Array, "*shape"]]:
    """(symbol upper bound, certified lower bound, its vector) for a stencil or derivative
    (`op`, with `stencil` its stencil)."""
    period = symbol_period(stencil.kernel, stencil.n, stencil.boundary)
    upper, q, symbol_at_q = symbol_peak(stencil.kernel, period, stencil.boundary == "periodic", gram_iterations)
    lower, vector = _stencil_lower(op, stencil, q, symbol_at_q, period, iterations, gram_iterations)
    return upper, lower, vector

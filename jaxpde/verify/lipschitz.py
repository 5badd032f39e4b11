r"""Lipschitz bounds of diffusion blocks, and the empirical local Lipschitz constant.

The Jacobian of $f(u) = u - \tau K^\top\Phi(Ku)$ is the symmetric matrix
$J(u) = I - \tau K^\top \operatorname{diag}(\Phi'(Ku)) K$. With $\Phi' \in [a, b]$,
$\tau K^\top \operatorname{diag}(\Phi') K$ has its eigenvalues in
$[\tau \min(a, 0)\|K\|^2, \tau b\|K\|^2]$, hence (mean-value theorem)

$$\operatorname{Lip}(f) \le \max\big(|1 - \tau b\|K\|^2|,\; 1 - \tau\min(a, 0)\|K\|^2\big).$$

For a monotone flux ($a \ge 0$) and $\tau \le 2/(b\|K\|^2)$ this is 1: the block is
non-expansive. For Perona-Malik ($a = -1/8$) at the Euclidean-stable step it is
$1 + \tau\|K\|^2/8 > 1$, and the falsifier finds pairs that move apart: Euclidean
stability ($\|f(u)\| \le \|u\|$) is not non-expansiveness. Proof:
`proofs/block-nonexpansive.md`.
"""

from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._checks import check_int
from ..blocks import DiffusionBlock
from .energy import l2_norm


def block_lipschitz_bound(
    block: DiffusionBlock,
    *,
    derivative_range: tuple[float, float] | None = None,
    norm: float | None = None,
) -> Float[Array, ""]:
    r"""Certified $\operatorname{Lip}(f) \le \max(|1 - \tau b\nu^2|, 1 - \tau\min(a,0)\nu^2)$
    with $[a, b]$ = `block.flux.derivative_range()` and $\nu$ = `block.op.norm_bound()`.

    These are the declarations of the classes: certified for jaxpde's own fluxes and
    operators. For a user's class pass checked values instead (`derivative_range`,
    `norm`; see `jaxpde.verify.hypotheses`), as `certify_callable` does."""
    low, high = block.flux.derivative_range() if derivative_range is None else derivative_range
    nu2 = (block.op.norm_bound() if norm is None else jnp.asarray(norm)) ** 2
    tau = block.tau
    return jnp.maximum(jnp.abs(1 - tau * high * nu2), 1 - tau * jnp.minimum(low, 0) * nu2)


def nonexpansive_step_size(block_or_op, flux=None) -> Float[Array, ""]:
    r"""The largest step with a non-expansiveness guarantee for a monotone flux,
    $2 / (\operatorname{Lip}(\Phi)\,\|K\|^2)$ (for a non-monotone flux no step is
    non-expansive on every input; see `block_lipschitz_bound`)."""
    if isinstance(block_or_op, DiffusionBlock):
        op, flux = block_or_op.op, block_or_op.flux
    else:
        op = block_or_op
    if flux is None:
        raise ValueError("`flux` is required when the first argument is an operator.")
    return 2 / (flux.lipschitz() * op.norm_bound() ** 2)


def composition_lipschitz_bound(blocks: Sequence[Callable]) -> Float[Array, ""]:
    r"""$\operatorname{Lip}(f_d \circ \dots \circ f_1) \le \prod_i \operatorname{Lip}(f_i)$
    for a network of `DiffusionBlock`s (others: give their bounds to `jnp.prod`)."""
    if len(blocks) == 0:
        raise ValueError("`blocks` must contain at least one block.")
    bounds = []
    for index, block in enumerate(blocks):
        if not isinstance(block, DiffusionBlock):
            raise TypeError(
                f"`blocks[{index}]` is a {type(block).__name__}, not a DiffusionBlock; "
                "bound it yourself and multiply the bounds."
            )
        bounds.append(block_lipschitz_bound(block))
    return jnp.prod(jnp.stack(bounds))


class LocalLipschitz(eqx.Module):
    """`lower <= ||J_f(u)||_2`, the spectral norm of the Jacobian at `point`, with the
    unit tangent `direction` that attains it. A lower bound of $\\operatorname{Lip}(f)$."""

    lower: Float[Array, ""]
    direction: Float[Array, "*shape"]
    point: Float[Array, "*shape"]


@eqx.filter_jit
def local_lipschitz(
    f: Callable[[Array], Array],
    u: Float[Array, "*shape"],
    key: PRNGKeyArray | None = None,
    *,
    iterations: int = 100,
) -> LocalLipschitz:
    r"""Power iteration on $J^\top J$ at $u$ (forward and reverse mode), keeping the
    best $\|J x\| / \|x\|$; every iterate is a valid lower bound of $\|J_f(u)\|$ and
    so of $\operatorname{Lip}(f)$ (for $f$ differentiable at $u$)."""
    iterations = check_int("iterations", iterations, minimum=1)
    key = jax.random.key(0) if key is None else key
    _, jvp = jax.linearize(f, u)
    vjp = jax.linear_transpose(jvp, u)
    x = jax.random.normal(key, u.shape, u.dtype)
    x = x / l2_norm(x)

    def body(carry, _):
        x, best, best_x = carry
        y = jvp(x)
        value = l2_norm(y)
        better = value > best
        best, best_x = jnp.where(better, value, best), jnp.where(better, x, best_x)
        (z,) = vjp(y)
        return (z / jnp.maximum(l2_norm(z), jnp.finfo(u.dtype).tiny), best, best_x), None

    (_, best, best_x), _ = jax.lax.scan(body, (x, jnp.zeros((), u.dtype), x), length=iterations)
    return LocalLipschitz(best, best_x, u)

r"""Fast Explicit Diffusion (FED): cycles of varying explicit step sizes.

$$\tau_i = \frac{\tau_{\max}}{2\cos^2\!\big(\pi\frac{2i+1}{4n+2}\big)}, \quad i = 0, \dots, n-1,
\qquad \sum_i \tau_i = \tau_{\max}\frac{n^2+n}{3}.$$

With the diffusivity frozen once per cycle, a cycle is
$\prod_i (I - \tau_i K^\top G K) = q_n(\tau_{\max} K^\top G K)$, the same polynomial as
an FSI cycle, Euclidean stable for $\tau_{\max} \le 2/(L\|K\|^2)$
(`proofs/fed-stability.md`). Half of the $\tau_i$ exceed the explicit limit, so in floating
point the order of the steps matters: an error made after step $i$ is multiplied by
the remaining factors (`rounding_amplification`). The default order is a weighted Leja
order of the roots $x_i = \tau_{\max}/\tau_i$ of $q_n$ (`leja_order`): every prefix and every
suffix of the product then stays small on $[0, 2]$, as for Newton interpolation at Leja
points, and the amplification stays below $2n^{3/2}$ for $n \le 500$ ($3.8\cdot10^3$ at
$n = 300$; claim `fed-rounding`). The $\kappa$-cycles $i \mapsto i\kappa \bmod n$ of Weickert et al.
(`kappa_order`, `order="kappa"`) reach $4.2\cdot10^6$ there and lose three more digits in
float32; the plain ascending order (`order="ascending"`) blows up for long cycles
(`proofs/fed-rounding.md`).

Reference: Grewenig, Weickert, Bruhn, DAGM 2010; Weickert, Grewenig, Schroers,
Bruhn, "Cyclic schemes for PDE-based image analysis", IJCV 2016 (step orders);
Leja, "Sur certaines suites liées aux ensembles plans et leur application à la
représentation conforme", Ann. Polon. Math. 4, 1957; Reichel, "Newton interpolation at
Leja points", BIT 30, 1990.
"""

import functools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .._checks import check_int
from ..blocks import DiffusionBlock
from ..fluxes import AbstractFlux, Frozen
from ..operators import AbstractOperator
from .cycle import AbstractCycleScheme

# Candidate kappas tried by `kappa_order` (spread over those coprime to n).
ORDER_CANDIDATES = 24


def _grid(cycle_length: int, per_root: int) -> np.ndarray:
    """Points $x = 2\\sin^2\\varphi$ of $[0, 2]$, uniform in $\\varphi$, `per_root` per root of $q_n$."""
    phi = np.linspace(0, np.pi / 2, per_root * (cycle_length + 4) + 1)
    return 2 * np.sin(phi) ** 2


def grid_factor(per_root: int) -> float:
    r"""$1/(1 - \pi/(2\,\text{per\_root}))$: the true maximum on $[0, 2]$ of a polynomial of degree
    at most $n$ is at most this times its maximum on the grid of `rounding_amplification`
    (Bernstein's inequality in $\psi = 2\varphi$; `proofs/fed-rounding.md`, Step 4)."""
    per_root = check_int("per_root", per_root, minimum=2)
    return 1 / (1 - math.pi / (2 * per_root))


def amplification_terms(fractions: np.ndarray, *, per_root: int = 16) -> tuple[np.ndarray, np.ndarray]:
    r"""The terms of `rounding_amplification`, one per step $i$ of the order given:
    $\max_x |P_{i-1}(x)| \cdot \max_x |S_i(x)|$ on the grid, and the grid point $x$ where
    $|P_{i-1}|$ is largest (where an input makes the state before step $i$ largest)."""
    t = np.asarray(fractions, np.float64)
    per_root = check_int("per_root", per_root, minimum=2)
    x = _grid(t.size, per_root)
    logs = np.abs(1 - t[:, None] * x[None, :])
    with np.errstate(divide="ignore"):
        np.log(logs, out=logs)
    # A factor that vanishes on the grid gets a finite stand-in far below any other value (its
    # products are 0 either way), so that suffixes can be taken as differences of prefix sums.
    np.maximum(logs, -1e4, out=logs)
    prefix = np.cumsum(logs, axis=0)  # row i: log |P_i|
    before = np.zeros(t.size)  # max log |P_{i-1}|, with P_{-1} = 1
    before[1:] = prefix[:-1].max(axis=1)
    peaks = np.zeros(t.size, dtype=np.intp)
    peaks[1:] = np.argmax(prefix[:-1], axis=1)
    np.subtract(prefix[-1][None, :], prefix, out=prefix)  # row i: log |S_i| = log |P_{n-1}| - log |P_i|
    with np.errstate(over="ignore"):
        terms = np.exp(before + prefix.max(axis=1))
    return terms, x[peaks]


def rounding_amplification(
    fractions: np.ndarray, *, per_root: int = 16, weights: np.ndarray | None = None
) -> float:
    r"""How much a cycle with step sizes `fractions` $\cdot\,\tau_{\max}$ (in this order)
    amplifies rounding errors, on the eigenvalues $x \in [0, 2]$ of $\tau_{\max} A$:

    $$\sum_i w_i \max_x |P_{i-1}(x)| \cdot \max_x |S_i(x)|, \quad
    P_{i} = \prod_{j \le i} (1 - t_j x), \quad S_i = \prod_{j > i} (1 - t_j x),$$

    with $w_i = 1$ unless `weights` are given. Step $i$ acts on a state of size
    $|P_{i-1}|\,\|u^0\|$; a relative error $\epsilon_i$ made there reaches the end multiplied
    by $S_i$. So this sum times the largest per-step relative error (or, with
    $w_i = \max(t_i, 1)$, times the per-step error per unit of $\max(t_i, 1)$) bounds the
    first-order rounding error of the cycle, in units of $\|u^0\|$. The maxima are taken on
    a grid of `per_root` points per root of $q_n$, uniform in $\varphi$ ($x = 2\sin^2\varphi$);
    the true maxima are at most `grid_factor(per_root)` times larger.
    """
    t = np.asarray(fractions, np.float64)
    w = np.ones_like(t) if weights is None else np.asarray(weights, np.float64)
    if w.shape != t.shape:
        raise ValueError(f"`weights` must have the shape of `fractions`, {t.shape}, got {w.shape}.")
    terms, _ = amplification_terms(t, per_root=per_root)
    return float(np.sum(w * terms))


def _ascending(cycle_length: int) -> np.ndarray:
    i = np.arange(cycle_length, dtype=np.float64)
    return 1 / (2 * np.cos(np.pi * (2 * i + 1) / (4 * cycle_length + 2)) ** 2)


# The step orders that `fed_step_sizes`, `fed_cycle` and `FEDScheme` accept; the first is the default.
ORDERS = ("leja", "kappa", "ascending")


def check_order(order: object) -> str:
    """`order` if it is one of `ORDERS`, else a `ValueError` naming the argument."""
    if not (isinstance(order, str) and order in ORDERS):
        raise ValueError(f"`order` must be one of {ORDERS}, got {order!r}.")
    return order


def _resolve_order(order: str | None, reorder: bool) -> str:
    """The order that `order` and the older `reorder` flag ask for (`reorder=False` is
    `order="ascending"`)."""
    if order is None:
        return ORDERS[0] if reorder else "ascending"
    order = check_order(order)
    if not reorder and order != "ascending":
        raise ValueError(
            f"`reorder=False` asks for the ascending order but `order={order!r}`; pass only `order`."
        )
    return order


# The exponents (a, b) of the weight w(x) = x^a (2 - x)^b of `leja_order` (see there).
LEJA_WEIGHT = (0.5, 0.25)


@functools.lru_cache(maxsize=64)
def leja_order(cycle_length: int, weight: tuple[float, float] = LEJA_WEIGHT) -> tuple[int, ...]:
    r"""The weighted Leja order of the roots $x_i = 1/t_i = 2\cos^2(\pi\frac{2i+1}{4n+2})$ of $q_n$:

    $$\pi(0) = \arg\max_i w(x_i), \qquad
    \pi(k) = \arg\max_{i \notin \pi(\{0..k-1\})} \Big(\log w(x_i) + \sum_{j<k} \log|x_i - x_{\pi(j)}|\Big),
    \qquad w(x) = x^a (2 - x)^b,$$

    each next root as far as possible, in the weighted product of distances, from those
    already taken (float64, in log space: the products over- and underflow for
    $n \gtrsim 300$; ties go to the smaller index, up to the rounding of the sums). $O(n^2)$ work,
    $O(n)$ memory.

    With $w = 1$ (`weight=(0.0, 0.0)`) this is the classical Leja order (Leja 1957), whose
    partial products are Newton-basis polynomials that stay within a moderate factor of the
    smallest possible on the interval (Reichel 1990). A FED prefix, though, is normalised at 0,
    $P_k(x) = \prod_{j \le k}(1 - x/x_{\pi(j)}) = \prod_{j \le k}(x_{\pi(j)} - x) / \prod_{j \le k} x_{\pi(j)}$: a small
    root (a large step) taken early divides every later prefix by itself. The factor $x^a$
    defers the small roots, and $(2 - x)^b$ defers the roots next to 2 a little, which keeps
    the suffixes $S_k$ small as well. The default $(a, b) = (1/2, 1/4)$ is the best of
    $a \in \{1/4, 3/8, \dots, 3/4\}$, $b \in \{0, 1/8, \dots, 1/2\}$ in `rounding_amplification` (geometric
    mean over 21 lengths up to 500): at $n = 100, 300, 500$ it is
    $9.4\cdot10^2$, $3.8\cdot10^3$, $7.8\cdot10^3$, against $8.4\cdot10^3$, $1.0\cdot10^5$, $4.0\cdot10^5$ for
    the classical order (from the largest root; the smallest is worse), $1.2\cdot10^4$,
    $4.2\cdot10^6$, $3.6\cdot10^8$ for `kappa_order`, and never more than either at any tested $n \le 500$.
    Leja on the step fractions $t_i$ instead of the roots is as bad as the ascending order
    ($10^{124}$ at $n = 300$): the large $t_i$ crowd the small roots.

    **Arguments:**

    - `cycle_length`: $n$.
    - `weight`: the exponents $(a, b) \ge 0$ of $w$.

    References: F. Leja, "Sur certaines suites liées aux ensembles plans et leur
    application à la représentation conforme", Ann. Polon. Math. 4, 1957; L. Reichel,
    "Newton interpolation at Leja points", BIT 30, 1990.
    """
    n = check_int("cycle_length", cycle_length, minimum=1)
    try:
        a, b = (float(e) for e in weight)
    except (TypeError, ValueError):
        raise ValueError(f"`weight` must be two exponents (a, b), got {weight!r}.") from None
    if not (math.isfinite(a) and math.isfinite(b) and a >= 0 and b >= 0):
        raise ValueError(f"`weight` must be two finite exponents >= 0, got {weight!r}.")
    i = np.arange(n, dtype=np.float64)
    x = 2 * np.cos(np.pi * (2 * i + 1) / (4 * n + 2)) ** 2  # in (0, 2), decreasing in i
    score = a * np.log(x) + b * np.log(2 - x)
    taken = np.zeros(n, dtype=bool)
    order = []
    k = int(np.argmax(score))
    with np.errstate(divide="ignore"):
        for _ in range(n):
            order.append(k)
            taken[k] = True
            score += np.log(np.abs(x - x[k]))  # -inf at k itself, which is taken
            k = int(np.argmax(np.where(taken, -np.inf, score)))
    return tuple(order)


@functools.lru_cache(maxsize=64)
def kappa_order(cycle_length: int) -> tuple[int, ...]:
    """The $\\kappa$-cycle order $(0, \\kappa, 2\\kappa, \\dots) \\bmod n$ of the ascending
    step sizes with the smallest `rounding_amplification`, over up to
    `ORDER_CANDIDATES` values $\\kappa \\le n/2$ coprime to $n$ ($O(n^2)$ work each, on
    4 grid points per root)."""
    n = check_int("cycle_length", cycle_length, minimum=1)
    ascending = _ascending(n)
    # kappa and n - kappa give mirrored orders: search kappa <= n / 2.
    coprime = [k for k in range(1, n // 2 + 1) if math.gcd(k, n) == 1] or [1]
    picks = np.unique(np.linspace(0, len(coprime) - 1, min(ORDER_CANDIDATES, len(coprime))).round().astype(int))
    orders = [tuple(int(i * coprime[p] % n) for i in range(n)) for p in picks]
    return min(orders, key=lambda order: rounding_amplification(ascending[list(order)], per_root=4))


def fed_order(cycle_length: int, order: str = ORDERS[0]) -> tuple[int, ...]:
    """The permutation of the ascending step indices that the named `order` applies:
    `"leja"` (`leja_order`, the default), `"kappa"` (`kappa_order`) or `"ascending"`."""
    n = check_int("cycle_length", cycle_length, minimum=1)
    order = check_order(order)
    if order == "leja":
        return leja_order(n)
    if order == "kappa":
        return kappa_order(n)
    return tuple(range(n))


@functools.lru_cache(maxsize=64)
def _checked_fractions(cycle_length: int, order: str) -> tuple[float, ...]:
    n = cycle_length
    ascending = _ascending(n)
    total = math.fsum(ascending)
    expected = (n * n + n) / 3
    eps = float(np.finfo(np.float64).eps)
    # Each tau_i carries a few ulp from cos and the division; fsum adds no more.
    if not (np.all(ascending > 0) and abs(total - expected) <= 8 * n * eps * expected):
        raise RuntimeError(
            f"FED step sizes for n = {n} fail their identity: sum = {total!r}, expected (n^2+n)/3 = {expected!r}."
        )
    permutation = fed_order(n, order)
    if sorted(permutation) != list(range(n)):
        raise RuntimeError(f"FED order {order!r} for n = {n} is not a permutation: {permutation}.")
    return tuple(float(v) for v in ascending[list(permutation)])


def fed_step_sizes(
    tau_max: float, cycle_length: int, *, order: str | None = None, reorder: bool = True
) -> np.ndarray:
    """The FED step sizes of one cycle (float64), checked when created: all positive and
    summing to $\\tau_{\\max}(n^2+n)/3$ within rounding (`RuntimeError` otherwise).

    **Arguments:**

    - `tau_max`: the explicit step-size limit.
    - `cycle_length`: $n$.
    - `order`: the step order, one of `ORDERS`: `"leja"` (default, `leja_order`),
      `"kappa"` (`kappa_order`) or `"ascending"`, whose rounding errors blow up for long
      cycles.
    - `reorder`: kept for older code: `False` is `order="ascending"`.
    """
    n = check_int("cycle_length", cycle_length, minimum=1)
    return float(tau_max) * np.asarray(_checked_fractions(n, _resolve_order(order, bool(reorder))))


def fed_cycle(
    block: DiffusionBlock,
    u: Float[Array, "*shape"],
    cycle_length: int,
    *,
    order: str | None = None,
    reorder: bool = True,
) -> Float[Array, "*shape"]:
    r"""One FED cycle with $\tau_{\max}$ = `block.tau`, the diffusivity frozen at $u$, the
    steps in `order` (see `fed_step_sizes`):

    $$u^{i+1} = u^i - t_i\tau_{\max}K^\top G K u^i, \qquad G = \operatorname{diag}(g((Ku)^2)),$$

    a `lax.scan` over the step fractions $t_i$ that carries only $u^i$: each step costs what an
    explicit step with a frozen diffusivity costs. `three_term_cycle` with $\alpha = 1$,
    $\beta = t$ computes the same values (it also carries $u^{i-1}$, multiplied by
    $1 - \alpha = 0$); use it where one program must serve padded FED and FSI cycles."""
    fractions = fed_step_sizes(1.0, cycle_length, order=order, reorder=reorder)
    frozen_block = eqx.tree_at(lambda b: b.flux, block, Frozen(block.flux, block.op(u)))

    def step(current, fraction):
        return current + fraction * frozen_block.update(current), None

    final, _ = jax.lax.scan(step, u, jnp.asarray(fractions, u.dtype))
    return final


class FEDScheme(AbstractCycleScheme):
    r"""FED cycles of a `DiffusionBlock`: `scheme(u)` runs one cycle, which advances
    `time_step` = $\tau_{\max}(n^2+n)/3$ (`AbstractCycleScheme`).

    The steps $\tau_i = t_i\tau_{\max}$, $t_i = 1/x_i$, run in the order `order`. All orders
    give the same cycle $\prod_i(I - \tau_iA) = q_n(\tau_{\max}A)$ in exact arithmetic;
    in floating point a relative error $\epsilon$ made at step $k$ reaches the end
    multiplied by the remaining factors, so the first-order error is at most
    $\epsilon\,\|u^0\|\sum_k \max_{[0,2]}|P_{k-1}|\max_{[0,2]}|S_k|$ (`rounding_amplification`).
    The default `"leja"` takes the roots $x_i$ in a weighted Leja order on $[0, 2]$
    (`leja_order`: each next root maximises $x^{1/2}(2 - x)^{1/4}$ times the product of its
    distances to those taken; Leja 1957, Reichel 1990), which keeps both products small:
    amplification $3.8\cdot10^3$ at $n = 300$ against $4.2\cdot10^6$ for the best $\kappa$-cycle
    $i \mapsto i\kappa \bmod n$ (Weickert, Grewenig, Schroers, Bruhn, IJCV 2016), `"kappa"`.
    `cycle_length` and `order` are static fields: one compiled cycle per length and order
    (`fed_cycle`, a two-term loop). A program that serves several lengths uses
    `three_term_cycle` with the step fractions padded with identity steps, as `fed-rounding` does.

    **Arguments:**

    - `op`, `flux`: the operator $K$ and the flux $\Phi$ (frozen once per cycle).
    - `tau_max`: the explicit step-size limit of the cycle; defaults to
      `stable_step_size(op, flux)`, and a larger one is refused unless
      `allow_unstable=True`.
    - `cycle_length`: steps per cycle $n$.
    - `order`: the step order, `"leja"` (default), `"kappa"` or `"ascending"` (see
      `fed_step_sizes`); a `ValueError` for any other value.
    - `reorder`: kept for older code: `False` is `order="ascending"`.
    """

    order: str = eqx.field(static=True)

    def __init__(
        self,
        op: AbstractOperator,
        flux: AbstractFlux,
        tau_max: ArrayLike | None = None,
        *,
        cycle_length: int,
        order: str | None = None,
        reorder: bool = True,
        allow_unstable: bool = False,
    ):
        super().__init__(op, flux, tau_max, cycle_length=cycle_length, allow_unstable=allow_unstable)
        self.order = _resolve_order(order, bool(reorder))
        fed_step_sizes(1.0, self.cycle_length, order=self.order)  # the identity checks

    @property
    def reorder(self) -> bool:
        """Whether the steps run in an order other than ascending."""
        return self.order != "ascending"

    @property
    def tau_max(self) -> Float[Array, ""]:
        r"""$\tau_{\max}$, the explicit step-size limit of the cycle."""
        return self.block.tau

    @property
    def step_sizes(self) -> np.ndarray:
        """The step sizes of one cycle, in the order used (needs a concrete `tau_max`)."""
        return fed_step_sizes(float(self.tau_max), self.cycle_length, order=self.order)

    def step(self, u: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        """One cycle (`fed_cycle`)."""
        return fed_cycle(self.block, u, self.cycle_length, order=self.order)

    def with_cycle(self, cycle_length: int, tau: Float[ArrayLike, ""]) -> "FEDScheme":
        r"""The FED scheme with cycles of `cycle_length` steps and $\tau_{\max}$ = `tau` (same `order`)."""
        block = self.block
        return FEDScheme(
            block.op, block.flux, tau, cycle_length=cycle_length, order=self.order,
            allow_unstable=block.allow_unstable,
        )

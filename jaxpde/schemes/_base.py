r"""The interface that every time-stepping scheme shares.

A scheme is a map $u^k \mapsto u^{k+1}$ that advances the time `time_step` of
$\partial_t u = -K^\top\Phi(Ku)$. Every scheme implements `step`, `default_steps`,
`for_time`, `time_step` and `evaluations_per_step`; `__call__`, `rollout` and `solve` are
implemented here, once, so that all schemes are driven by the same calls:

    scheme.step(u)                                  # = scheme(u): one step (FED, FSI: one cycle)
    scheme.rollout(u0, num_steps, save_every=None)  # lax.scan
    scheme.for_time(t_end, steps=M)                 # the scheme whose M steps reach t_end
    scheme.solve(u0, t_end, steps=None)             # = for_time(t_end, steps=M).rollout(u0, M)

Reference: arXiv:2103.15419, Sections 3-5 (schemes as blocks composed in time).
"""

import abc
import functools
import os
import sys
import types
import typing
import warnings
from collections.abc import Callable

import equinox as eqx
from jaxtyping import Array, Float

from .._checks import check_int, check_positive_float, concrete_value
from .rollout import rollout

_Function = typing.TypeVar("_Function", bound=Callable)
# Frames that `renamed_keyword` skips to name the caller in its warning: equinox calls a
# module's bound method through a frame of its own.
_WRAPPER_FILES = (os.path.dirname(eqx.__file__) + os.sep,)


class AbstractScheme(eqx.Module):
    r"""A time-stepping scheme for $\partial_t u = -K^\top\Phi(Ku)$ on one sample (batch with
    `jax.vmap`).

    **Abstract (each scheme implements):**

    - `step(u)`: one step; for cycle schemes (FED, FSI) one cycle.
    - `default_steps(t_end)`: the number of steps `solve` and `for_time` take when not told.
    - `for_time(t_end, *, steps=None)`: the scheme of the same kind and configuration whose
      `steps` steps advance exactly `t_end` (`None`: `default_steps(t_end)`);
      `steps * for_time(t_end, steps=steps).time_step == t_end` up to rounding.
    - `time_step`: the time one step advances (a Python float when the step size is
      concrete, else the traced array).
    - `evaluations_per_step`: evaluations of the flux per step (the cost of an explicit
      step each), or `None` where it varies from step to step (iterative solvers).

    **Implemented here:** `__call__` (= `step`), `rollout` and `solve`.
    """

    time_step: eqx.AbstractVar[float | Float[Array, ""]]
    evaluations_per_step: eqx.AbstractVar[int | None]

    @abc.abstractmethod
    def step(self, u: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        """One step (one cycle for cycle schemes) from the sample `u`."""

    @abc.abstractmethod
    def default_steps(self, t_end: float) -> int:
        """The number of steps `solve(u0, t_end)` takes (at least 1)."""

    @abc.abstractmethod
    def for_time(self, t_end: float, *, steps: int | None = None) -> "AbstractScheme":
        """The scheme whose `steps` steps advance exactly `t_end` (`None`: `default_steps`)."""

    def __call__(self, u: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        """One step: `step(u)`."""
        return self.step(u)

    def rollout(
        self, u0: Float[Array, "*shape"], num_steps: int, *, save_every: int | None = None
    ) -> Float[Array, "*shape"] | tuple[Float[Array, "*shape"], Float[Array, "saves *shape"]]:
        """`num_steps` steps from `u0` on `lax.scan` (see `jaxpde.schemes.rollout`): the final
        state, or `(final, trajectory)` with every `save_every`-th state from `u0` on."""
        return rollout(self.step, u0, num_steps, save_every=save_every)

    def solve(self, u0: Float[Array, "*shape"], t_end: float, *, steps: int | None = None) -> Float[Array, "*shape"]:
        """The state at time `t_end`: `for_time(t_end, steps=steps).rollout(u0, steps)`, with
        `steps=None` the scheme's `default_steps(t_end)`."""
        t_end, steps = resolve_steps(self, t_end, steps)
        return self.for_time(t_end, steps=steps).rollout(u0, steps)


def resolve_steps(scheme: AbstractScheme, t_end: float, steps: int | None) -> tuple[float, int]:
    """`t_end` checked (a finite float > 0) and the number of steps: `steps` checked (an
    integer >= 1), or `scheme.default_steps(t_end)` when it is `None`. For `for_time`."""
    t_end = check_positive_float("t_end", t_end)
    if steps is None:
        return t_end, scheme.default_steps(t_end)
    return t_end, check_int("steps", steps, minimum=1)


def concrete_time(tau: Float[Array, ""]) -> float | Float[Array, ""]:
    """`tau` as a Python float when it is concrete, else the traced array (for `time_step`)."""
    known = concrete_value(tau)
    return tau if known is None else float(known)


def renamed_keyword(old: str, new: str) -> Callable[[_Function], _Function]:
    """Decorate a function so that it accepts the keyword `old` as a deprecated alias of `new`,
    for one release: a `DeprecationWarning` naming `new`, a `TypeError` when both are given.
    The signature shown (`inspect.signature`, `__wrapped__`) is the function's own, without `old`."""

    def decorate(function: _Function) -> _Function:
        @functools.wraps(function)
        @typing.no_type_check  # no typechecking wrapper (jaxtyping's import hook) between caller and `warn`
        def accepting_old_name(*args, **kwargs):
            if old in kwargs:
                if new in kwargs:
                    raise TypeError(f"Pass `{new}` only: `{old}` is its deprecated name.")
                warnings.warn(
                    f"`{old}` is deprecated and will be removed in the next release: pass `{new}` instead.",
                    DeprecationWarning,
                    stacklevel=_caller_stacklevel(sys._getframe(1)),
                )
                kwargs[new] = kwargs.pop(old)
            return function(*args, **kwargs)

        return accepting_old_name  # pyright: ignore[reportReturnType]

    return decorate


def _caller_stacklevel(frame: types.FrameType | None) -> int:
    """The `stacklevel` of a `warnings.warn` in a function called from `frame` (level 2) that
    names the first frame outside equinox from `frame` on."""
    level = 2
    while frame is not None and frame.f_code.co_filename.startswith(_WRAPPER_FILES):
        level, frame = level + 1, frame.f_back
    return level

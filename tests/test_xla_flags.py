"""`prefer_quick_compilation`: XLA:CPU's loop emitters and optimisation level 0 for the
command and the tests, never over a flag the user set, never on a jaxlib that may not know
the flags."""

import os

import pytest

from jaxpde._xla_flags import (
    FLAG,
    KNOWN_VERSIONS,
    OPTIMIZATION_FLAG,
    QUICK_FLAGS,
    prefer_quick_compilation,
)

QUICK = tuple(f"--{name}={value}" for name, value in QUICK_FLAGS.items())


@pytest.mark.parametrize("before", [None, "", "--xla_force_host_platform_device_count=4"])
def test_appends_the_flags_and_keeps_the_others(before):
    environ = {} if before is None else {"XLA_FLAGS": before}
    assert prefer_quick_compilation(environ, version=KNOWN_VERSIONS[1]) == QUICK
    flags = environ["XLA_FLAGS"].split()
    assert tuple(flags[-len(QUICK) :]) == QUICK
    assert flags[: -len(QUICK)] == (before or "").split()


@pytest.mark.parametrize("name", [FLAG, OPTIMIZATION_FLAG])
@pytest.mark.parametrize("value", ["true", "3"])
def test_never_overrides_the_users_choice(name, value):
    environ = {"XLA_FLAGS": f"--{name}={value}"}
    added = prefer_quick_compilation(environ, version=KNOWN_VERSIONS[0])
    assert not any(name in flag for flag in added)
    assert environ["XLA_FLAGS"].split() == [f"--{name}={value}", *added]
    assert len(added) == len(QUICK_FLAGS) - 1


def test_appends_nothing_twice():
    environ = {}
    prefer_quick_compilation(environ, version=KNOWN_VERSIONS[0])
    once = environ["XLA_FLAGS"]
    assert prefer_quick_compilation(environ, version=KNOWN_VERSIONS[0]) == ()
    assert environ["XLA_FLAGS"] == once


@pytest.mark.parametrize("version", [(0, 7), (0, 11), (1, 0)])
def test_sets_nothing_on_jaxlib_versions_not_known_to_define_the_flag(version):
    environ = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    assert prefer_quick_compilation(environ, version=version) == ()
    assert environ == {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}


def test_the_installed_jaxlib_is_known_and_the_suite_compiles_with_the_quick_flags():
    # conftest.py calls it before JAX starts: this process runs with the flags.
    assert prefer_quick_compilation({}), "the installed jaxlib is outside KNOWN_VERSIONS: measure, then extend it"
    flags = os.environ.get("XLA_FLAGS", "").split()
    assert all(flag in flags for flag in QUICK)

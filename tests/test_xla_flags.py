"""`prefer_quick_compilation`: XLA:CPU's loop emitters for the command and the tests, never
over a flag the user set, never on a jaxlib that may not know the flag."""

import os

import pytest

from jaxpde._xla_flags import (
    FLAG,
    KNOWN_VERSIONS,
    QUICK_COMPILATION,
    prefer_quick_compilation,
)


@pytest.mark.parametrize("before", [None, "", "--xla_force_host_platform_device_count=4"])
def test_appends_the_flag_and_keeps_the_others(before):
    environ = {} if before is None else {"XLA_FLAGS": before}
    assert prefer_quick_compilation(environ, version=KNOWN_VERSIONS[1])
    flags = environ["XLA_FLAGS"].split()
    assert flags[-1] == QUICK_COMPILATION
    assert flags[:-1] == (before or "").split()


@pytest.mark.parametrize("value", ["true", "false"])
def test_never_overrides_the_users_choice(value):
    environ = {"XLA_FLAGS": f"--{FLAG}={value}"}
    assert prefer_quick_compilation(environ, version=KNOWN_VERSIONS[0]) == (value == "false")
    assert environ["XLA_FLAGS"] == f"--{FLAG}={value}"


@pytest.mark.parametrize("version", [(0, 7), (0, 11), (1, 0)])
def test_sets_nothing_on_jaxlib_versions_not_known_to_define_the_flag(version):
    environ = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    assert not prefer_quick_compilation(environ, version=version)
    assert environ == {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}


def test_the_installed_jaxlib_is_known_and_the_suite_compiles_with_the_loop_emitters():
    # conftest.py calls it before JAX starts: this process runs with the flag.
    assert prefer_quick_compilation({}), "the installed jaxlib is outside KNOWN_VERSIONS: measure, then extend it"
    assert QUICK_COMPILATION in os.environ.get("XLA_FLAGS", "").split()

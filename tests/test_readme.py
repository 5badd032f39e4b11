"""The README's Python examples run as written, in order, in one namespace."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert len(blocks) >= 4
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 (our own README)


def test_quickstart_is_two_commands_and_ci_runs_the_second():
    text = README.read_text()
    quickstart = re.search(r"## Quickstart\n\n```bash\n(.*?)```", text, flags=re.DOTALL).group(1)
    commands = [line for line in quickstart.splitlines() if line.strip()]
    assert len(commands) == 2
    assert "jaxpde certify" in commands[0]
    ci = (README.parent / ".ci" / "run").read_text()
    assert commands[1] in ci

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.parametrize("index", range(len(_python_blocks())))
def test_readme_python_blocks_run(index):
    exec(compile(_python_blocks()[index], "README.md", "exec"), {"__name__": "readme"})


def test_readme_has_exactly_the_two_quick_start_commands():
    text = README.read_text()
    quick = text.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line for line in quick.strip().splitlines() if line.strip()]
    assert len(commands) == 2
    assert commands[0].startswith("bash .ci/in-venv python recipes/o3f_iql.py")
    assert commands[1].startswith("bash .ci/in-venv python -m pytest")
    ci = (README.parent / ".ci" / "run").read_text()
    assert "bash .ci/in-venv python -m pytest" in ci

"""The README's code example runs as written, and its links into docs/ resolve."""

import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_first_functional_example_runs_and_prints_what_it_says(capsys):
    block = python_blocks()[0]
    namespace = {}
    exec(compile(block, "README.md", "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "{'bias': (6,), 'weights': (6, 1, 5, 5)}"
    assert printed[1] == "(128, 10)"
    assert namespace["y"].shape == (128, 10)
    np.testing.assert_allclose(np.asarray(namespace["y"]).sum(axis=1), 1.0, rtol=1e-5)


def test_readme_has_one_example_and_its_links_resolve():
    """The README keeps one example (the guides in docs/ hold the rest, run by test_docs.py)."""
    assert len(python_blocks()) == 1
    links = re.findall(r"\]\(([^)#]+)\)", README.read_text())
    assert links
    for link in links:
        assert (README.parent / link).is_file(), link

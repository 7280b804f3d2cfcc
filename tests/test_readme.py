"""The README's code example runs as written, in a plain interpreter with JAX's defaults (not
the suite's XLA flags or x64: `plain_python.run_markdown_pages`), and its links into docs/
resolve."""

import pathlib
import re

from plain_python import run_markdown_pages

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_first_functional_example_runs_and_prints_what_it_says(tmp_path):
    text = README.read_text()
    block = python_blocks()[0]
    first_line = text[:text.index(block)].count("\n") + 1
    check = ("\nimport numpy as np\nassert y.shape == (128, 10), y.shape\n"
             "np.testing.assert_allclose(np.asarray(y).sum(axis=1), 1.0, rtol=1e-5)\nprint(y.dtype)\n")
    passed, output = run_markdown_pages({"README.md": [(first_line, block + check)]}, tmp_path)["README.md"]
    assert passed, output
    printed = output.splitlines()[1:]
    assert printed[:2] == ["{'bias': (6,), 'weights': (6, 1, 5, 5)}", "(128, 10)"], output
    assert [line.split(":")[0] for line in printed[2:4]] == ["epoch 1/2", "epoch 2/2"], output  # fit's log lines
    assert printed[4:] == ["completed runs/example/checkpoints/step_00000002", "float32"], output


def test_readme_has_one_example_and_its_links_resolve():
    """The README keeps one example (the guides in docs/ hold the rest, run by test_docs.py)."""
    assert len(python_blocks()) == 1
    links = re.findall(r"\]\(([^)#]+)\)", README.read_text())
    assert links
    for link in links:
        assert (README.parent / link).is_file(), link

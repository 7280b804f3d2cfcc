"""`python -m jaxdl.exercise check DIR` on a NumPy solution written for these tests (issue 23).

``tests/student_solutions/reference`` is a complete NumPy solution in the course layout; the
checker must pass it. ``bugs.BUGS`` are one classic bug per class, applied as small patches to
a copy of it: the checker must name each class, the method and the usual cause. ``bugs.BAD``
are a file that does not import, an infinite loop, a wrong constructor signature and a
process that dies: each is reported and the other classes are still checked. Three checker
runs in all (the reference through the command line, the broken copy and the bad files
through `check`), the first two side by side.
"""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxdl.exercise import check as checker
from jaxdl.exercise.check import _classes, _report
from jaxdl.exercise.check._compare import compare

sys.path.insert(0, str(Path(__file__).with_name("student_solutions")))
import bugs  # noqa: E402

CLASSES = [name for name, _, _ in _classes.CLASSES]


def _files(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _command_line(directory):
    return subprocess.run([sys.executable, "-m", "jaxdl.exercise", "check", str(directory), "--json"],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def compilation_cache(tmp_path_factory):
    """A fresh JAX compilation cache for the workers: the first run fills it, the later ones load."""
    old = os.environ.get("JAXDL_CACHE_DIR")
    os.environ["JAXDL_CACHE_DIR"] = str(tmp_path_factory.mktemp("jaxdl-cache"))
    yield
    if old is None:
        del os.environ["JAXDL_CACHE_DIR"]
    else:
        os.environ["JAXDL_CACHE_DIR"] = old


@pytest.fixture(scope="module")
def runs(tmp_path_factory, compilation_cache):
    root = tmp_path_factory.mktemp("solutions")
    broken = bugs.write_broken(root / "broken")
    before = _files(broken)
    reference = _command_line(bugs.REFERENCE)
    lines = []
    code = checker.main(broken, None, True, checker.DEFAULT_TIMEOUT, lines.append)
    report = json.loads(lines[0])
    return {"reference": reference, "broken_code": code, "broken": {c["name"]: c for c in report["classes"]},
            "files": (before, _files(broken))}


def test_the_reference_solution_passes(runs):
    result = runs["reference"]
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["ok"] and report["not_found"] == []
    assert [c["name"] for c in report["classes"]] == CLASSES
    for entry in report["classes"]:
        assert entry["status"] == "ok" and entry["methods"], entry
    methods = {c["name"]: [m["name"] for m in c["methods"]] for c in report["classes"]}
    assert methods["RNN"] == ["forward", "backward", "gradient_weights", "weights update", "forward (memorize=True)"]
    assert "forward (testing phase)" in methods["BatchNormalization"] and "reformat" in methods["BatchNormalization"]
    assert report["seconds"] < 60


@pytest.mark.parametrize("bug", bugs.BUGS, ids=[bug[0] for bug in bugs.BUGS])
def test_each_broken_class_is_named_with_its_method_and_hint(runs, bug):
    name, _, _, _, method, hint = bug
    entry = runs["broken"][name]
    assert entry["status"] == "fail", entry
    first = next(m for m in entry["methods"] if m["status"] == "fail")
    assert first["name"] == method, entry
    assert hint in first.get("hint", ""), first
    assert first["case"] and first["message"]


def test_the_broken_copy_fails_only_where_broken_and_is_not_written_to(runs):
    assert runs["broken_code"] == 1
    for name in ("Constant", "UniformRandom", "He"):  # no bug there: still OK beside the broken ones
        assert runs["broken"][name]["status"] == "ok"
    assert {name for name, entry in runs["broken"].items() if entry["status"] == "fail"} == {
        bug[0] for bug in bugs.BUGS}
    before, after = runs["files"]
    assert before == after  # no file changed, no __pycache__ written


def test_bad_files_are_reported_and_the_others_still_checked(tmp_path, compilation_cache):
    bad = bugs.write_bad(tmp_path / "bad")
    report = checker.check(bad, only=["ReLU", "TanH", "Sigmoid", "SoftMax", "Flatten"], timeout=3)
    by_name = {c["name"]: c for c in report["classes"]}
    assert list(by_name) == ["ReLU", "TanH", "Sigmoid", "SoftMax", "Flatten"]  # Sigmoid on: after the hang
    for name, _, _, _, status, piece in bugs.BAD:
        entry = by_name[name]
        assert entry["status"] == status, entry
        text = entry.get("message", "") + " ".join(m.get("message", "") for m in entry.get("methods", []))
        assert piece in text, entry
    assert by_name["Sigmoid"]["methods"][0]["name"] == "constructor"
    assert by_name["Flatten"]["status"] == "ok" and not report["ok"]
    assert not list(bad.rglob("__pycache__"))
    text = _report.text(report).splitlines()
    assert text[1].startswith("ReLU                ERROR    Layers/ReLU.py does not import: SyntaxError")
    assert text[-1].startswith("1 ERROR, 1 TIMEOUT, 1 FAIL, 1 CRASH, 1 OK")


def test_only_and_missing_files(tmp_path, capsys):
    assert _classes.select(["optimizers"]) == ["Sgd", "SgdWithMomentum", "Adam"]
    assert _classes.select(["conv", "LSTM"]) == ["Conv", "LSTM"]
    with pytest.raises(ValueError, match="unknown convolution"):
        _classes.select(["Convolution"])
    assert checker.main(tmp_path, ["Convolution"]) == 2
    assert "known classes: FullyConnected" in capsys.readouterr().out
    assert checker.main(tmp_path / "nowhere") == 2
    (tmp_path / "Layers").mkdir()
    report = checker.check(tmp_path)  # nothing found: no worker, nothing OK
    assert report["classes"] == [] and not report["ok"] and report["not_found"] == CLASSES


@pytest.mark.parametrize("student, reference, kwargs, piece", [
    (np.arange(6.0).reshape(3, 2).T, np.arange(6.0).reshape(3, 2), {}, "transpose"),
    (np.ones((4, 3)), np.full(3, 4.0), {}, "not summed over the batch"),
    (np.arange(6.0), np.arange(6.0).reshape(2, 3), {}, "wrong shape"),
    (-np.arange(1.0, 4.0), np.arange(1.0, 4.0), {}, "sign is flipped"),
    (0.5 * np.arange(1.0, 4.0), np.arange(1.0, 4.0), {"factors": [(0.5, "half")]}, "half"),
    (3 * np.arange(1.0, 4.0), np.arange(1.0, 4.0), {}, "3 times"),
    (np.array([np.nan, 1.0]), np.ones(2), {"nonfinite_hint": "overflow"}, "overflow"),
])
def test_compare_hints(student, reference, kwargs, piece):
    finding = compare(student, reference, **kwargs)
    assert piece in finding["hint"], finding
    assert compare(reference, reference) is None

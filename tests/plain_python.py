"""Child processes started as a user starts them: a plain interpreter, JAX's default settings.

tests/conftest.py adds the suite's ``--xla_backend_optimization_level=0`` to ``XLA_FLAGS`` and
enables ``jax_enable_x64`` in the test process. The commands of README.md and docs/ and their
Python examples must work without either, so tests/test_scripts.py, test_docs.py and
test_readme.py run them through `run_plain`: ``sys.executable`` in an environment without
``XLA_FLAGS`` and ``JAX_ENABLE_X64``, with ``JAXDL_CACHE_DIR`` (prepared MNIST, compiled
programs) in a directory the test chooses, and a timeout, so a hang fails the test instead of
stalling the suite.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
#: Variables of the suite's environment a child does not get (tests/conftest.py sets the first).
SUITE_VARIABLES = ("XLA_FLAGS", "JAX_ENABLE_X64", "JAX_COMPILATION_CACHE_DIR", "JAX_ENABLE_COMPILATION_CACHE")


def plain_env(cache_dir, **variables: str) -> dict:
    """The suite's environment without `SUITE_VARIABLES`, with ``JAXDL_CACHE_DIR=cache_dir`` and
    ``variables``."""
    environment = {name: value for name, value in os.environ.items() if name not in SUITE_VARIABLES}
    environment.update(JAXDL_CACHE_DIR=str(cache_dir), **variables)
    return environment


def run_plain(arguments, *, cwd, cache_dir, timeout: float = 300, stdin: str | None = None,
              **variables: str) -> subprocess.CompletedProcess:
    """Runs ``python *arguments`` in ``cwd`` with `plain_env`; returns the completed process
    (text stdout and stderr). A run past ``timeout`` seconds fails the calling test, naming it."""
    command = [sys.executable, *map(str, arguments)]
    try:
        return subprocess.run(command, cwd=cwd, env=plain_env(cache_dir, **variables), input=stdin,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as error:
        raise AssertionError(f"{' '.join(command)} ran past {timeout} s in {cwd}:\n{error.stdout}\n{error.stderr}")


def described(result: subprocess.CompletedProcess) -> str:
    """The command, its exit status and its output, for an assertion message."""
    return (f"{' '.join(map(str, result.args))} exited with {result.returncode}\n--- stdout:\n{result.stdout}\n"
            f"--- stderr:\n{result.stderr}")


#: The child of `run_markdown_pages`: imports jax and jaxdl once (no backend starts and no
#: thread runs yet, so forking is safe), then runs each page in a process forked from that
#: state: its own working directory, a new module for its namespace, stdout and stderr to its
#: own file, a time limit (SIGALRM), a traceback pointing into the Markdown file on failure.
_PAGE_RUNNER = r'''
import json, os, signal, sys, threading, traceback, types
import jax, jaxdl
assert threading.active_count() == 1, "a thread runs before the fork"
jobs, limit = json.load(open(sys.argv[1])), int(sys.argv[2])
results = {}
for job in jobs:
    pid = os.fork()
    if pid == 0:
        signal.alarm(limit)
        os.chdir(job["cwd"])
        with open(job["output"], "w") as output:
            os.dup2(output.fileno(), 1)
            os.dup2(output.fileno(), 2)
        module = types.ModuleType("__main__")
        sys.modules["__main__"] = module
        status = 0
        try:
            for line, code in job["blocks"]:
                exec(compile("\n" * (line - 1) + code, job["page"], "exec"), module.__dict__)
        except BaseException:
            traceback.print_exc()
            status = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    _, status = os.waitpid(pid, 0)
    results[job["page"]] = ("exit status %d" % os.WEXITSTATUS(status) if os.WIFEXITED(status)
                            else "killed by signal %d (time limit %d s: SIGALRM is 14)" % (os.WTERMSIG(status), limit))
print(json.dumps(results))
'''


def run_markdown_pages(pages: dict[str, list[tuple[int, str]]], tmp_path: pathlib.Path, *,
                       limit: float = 300) -> dict[str, tuple[bool, str]]:
    """Runs the Python blocks of each page, in order, as a user would paste them into a plain
    interpreter with JAX's defaults (`plain_env`): each page in its own process and working
    directory, its blocks in one namespace. Returns {page: (passed, its output or traceback)}.

    Args:
        pages: {page name (shown in tracebacks): [(line of the block's first code line, code)]}.
        tmp_path: a directory for the pages' working directories and outputs.
        limit: seconds each page may run.
    """
    jobs = []
    for index, (page, blocks) in enumerate(pages.items()):
        cwd = tmp_path / f"page{index}"
        cwd.mkdir()
        jobs.append({"page": page, "blocks": blocks, "cwd": str(cwd), "output": str(tmp_path / f"page{index}.out")})
    job_file = tmp_path / "jobs.json"
    job_file.write_text(json.dumps(jobs))
    result = run_plain(["-c", _PAGE_RUNNER, job_file, int(limit)], cwd=tmp_path, cache_dir=tmp_path / "jaxdl_cache",
                       timeout=limit * len(jobs) + 60)
    assert result.returncode == 0, described(result)
    statuses = json.loads(result.stdout.splitlines()[-1])
    return {job["page"]: (statuses[job["page"]] == "exit status 0",
                          f"{statuses[job['page']]}\n{pathlib.Path(job['output']).read_text()}") for job in jobs}

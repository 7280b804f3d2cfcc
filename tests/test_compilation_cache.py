"""jaxdl.compilation_cache: JAX's persistent compilation cache for the command lines.

Each case runs in a fresh Python process: JAX reads the cache setting once, at its first
compilation, and the test process has compiled long before.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

SCRIPTS = pathlib.Path(__file__).resolve().parents[1] / "scripts"

PROGRAM = """
import json, sys, jax, jax.numpy as jnp
from jax import monitoring
from jaxdl.compilation_cache import enable_compilation_cache
hits = []
monitoring.register_event_listener(lambda event, **kw: hits.append(event) if event.endswith("cache_hits") else None)
directory = enable_compilation_cache(*sys.argv[1:])
value = jax.jit(lambda x: jnp.sin(x) * 3.0 + jnp.arange(7.0))(1.0)
print(json.dumps({"directory": None if directory is None else str(directory), "hits": len(hits),
                  "value": float(value.sum())}))
"""


def run(tmp_path, *args, **env):
    environment = {**os.environ, "JAXDL_CACHE_DIR": str(tmp_path / "jaxdl_cache"), **env}
    for name in ("JAX_COMPILATION_CACHE_DIR", "JAX_ENABLE_COMPILATION_CACHE"):
        if name not in env:
            environment.pop(name, None)
    done = subprocess.run([sys.executable, "-c", PROGRAM, *args], env=environment, capture_output=True, text=True,
                          timeout=120, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_second_process_loads_what_the_first_compiled(tmp_path):
    first = run(tmp_path)
    directory = tmp_path / "jaxdl_cache" / "xla"
    assert first["directory"] == str(directory) and first["hits"] == 0
    assert any(directory.iterdir())  # even a program that compiled in milliseconds is kept
    second = run(tmp_path)
    assert second["hits"] >= 1 and second["value"] == first["value"]


def test_a_directory_can_be_given(tmp_path):
    result = run(tmp_path, str(tmp_path / "elsewhere"))
    assert result["directory"] == str(tmp_path / "elsewhere") and any((tmp_path / "elsewhere").iterdir())
    assert not (tmp_path / "jaxdl_cache").exists()


def test_jax_settings_of_the_user_win(tmp_path):
    kept = run(tmp_path, JAX_COMPILATION_CACHE_DIR=str(tmp_path / "users_own"))
    assert kept["directory"] == str(tmp_path / "users_own")
    assert not (tmp_path / "jaxdl_cache").exists()
    off = run(tmp_path, JAX_ENABLE_COMPILATION_CACHE="false")
    assert off["directory"] is None and not (tmp_path / "jaxdl_cache").exists()


def test_a_command_line_fills_the_cache(tmp_path):
    """The scripts switch the cache on before anything compiles (train_sequence.py, tiny)."""
    environment = {**os.environ, "JAXDL_CACHE_DIR": str(tmp_path / "jaxdl_cache")}
    for name in ("JAX_COMPILATION_CACHE_DIR", "JAX_ENABLE_COMPILATION_CACHE"):
        environment.pop(name, None)
    subprocess.run([sys.executable, str(SCRIPTS / "train_sequence.py"), "--hidden", "8", "--chunks", "2", "--batches", "2",
                    "--test-batches", "1", "--batch", "4", "--no-progress"], env=environment, capture_output=True,
                   timeout=300, check=True)
    entries = [path.name for path in (tmp_path / "jaxdl_cache" / "xla").iterdir()]
    assert any("train_step" in name or "step" in name for name in entries), entries


@pytest.mark.parametrize("script", ["train_lenet.py", "evaluate_lenet.py", "train_sequence.py"])
def test_every_command_line_switches_it_on_first(script):
    main_block = (SCRIPTS / script).read_text().split('if __name__ == "__main__":')[1]
    assert main_block.strip().startswith("enable_compilation_cache()")

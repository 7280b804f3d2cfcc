"""Test-session settings.

* 64-bit floats are enabled so finite-difference checks are meaningful; float32 paths are
  tested by passing float32 arrays and ``dtype=jnp.float32`` explicitly.
* XLA compiles without its backend optimizations (``--xla_backend_optimization_level=0``),
  without XLA:CPU's MLIR fusion emitters (``--xla_cpu_use_fusion_emitters=false``) and in one
  code generation module (``--xla_cpu_parallel_codegen_split_count=1``), the last two where
  the jaxlib knows them: the tests run thousands of tiny programs once each, where
  compilation dominates; the first flag halves the suite's time, the second halves the
  compilation that remains, the third saves a fifth of the rest. Speed is measured by the
  scripts in benchmarks/, never here.

What the flags change: how XLA's CPU backend turns each program into machine code, never
which program runs; results are the same up to float rounding, with one exception
seen (2026-12-07, jaxlib 0.10.2): at this level the float32 gradient of ``jnp.max(x, axis)``
held ``-inf`` where ``x`` was drawn inside the same jit, which the default level computes
correctly (`GlobalMaxPooling` uses argmax and ``take_along_axis`` since). So a test here can
fail where users would not, and a program the default level gets wrong is caught only where
the paths below run it at JAX's defaults, among them the float32 subprocess of
test_float32.py, which runs every registry layer (outputs, state and gradients) and every
training case compiled as users compile them. jaxdl reads ``XLA_FLAGS`` in
two places. `jaxdl.training.state.init_compiler_options` keeps the options set there, so
under these flags `create_train_state` compiles its initialization without compiler options
of its own; with JAX's defaults it passes them, which JAX allows only on a top-level
``jax.jit`` (the suite once hid exactly that failure, issue 20). `jaxdl.mesh.cpu`
adds collective timeouts unless ``XLA_FLAGS`` sets them (these flags set none). So every path
that depends on the flags also runs without them: the tests that start a plain interpreter
(tests/plain_python.py) run the scripts, the documented commands, the README's and the
documentation's examples and `create_train_state` under ``jax.jit``/``jax.eval_shape`` with
JAX's defaults (tests/test_scripts.py, test_docs.py, test_readme.py), and
tests/test_training.py clears ``XLA_FLAGS`` to test the initialization's options.
x64 is the same: those children run without it, as users do.
"""

import os
import shutil
import subprocess
import sys
import tempfile

#: Compile-time flags beside the backend level 0, used where this jaxlib knows them (an unknown
#: flag in ``XLA_FLAGS`` aborts the process), probed once by the controller; the workers inherit
#: the result through ``XLA_FLAGS``. Measured 2026-12-07, jaxlib 0.10.2, AMD EPYC Zen 4:
#: without XLA:CPU's MLIR fusion emitters (the older elemental emitter writes each fusion's
#: loops) an autodiff + float32 subset spent 43 s instead of 104 s in XLA's compilation (144 ->
#: 80 s of wall on one worker); one code generation module instead of parallel splits then
#: compiled the registry's gradients and HVPs in 11 s instead of 13.5-15 s.
_COMPILE_SPEED_FLAGS = ("--xla_cpu_use_fusion_emitters=false", "--xla_cpu_parallel_codegen_split_count=1")
_PROBED_ENV = "JAXDL_TEST_XLA_FLAGS_PROBED"


def _xla_accepts(flags: str) -> bool:
    """Whether a plain interpreter with ``flags`` as ``XLA_FLAGS`` compiles and runs a program."""
    probe = "import jax; jax.jit(lambda x: x + 1)(1.0).block_until_ready()"
    try:
        result = subprocess.run([sys.executable, "-c", probe], env={**os.environ, "XLA_FLAGS": flags},
                                capture_output=True, timeout=120)
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0


if _PROBED_ENV not in os.environ:  # the controller (or a run without xdist)
    os.environ[_PROBED_ENV] = "1"
    _accepted = (list(_COMPILE_SPEED_FLAGS) if _xla_accepts(" ".join(_COMPILE_SPEED_FLAGS))
                 else [flag for flag in _COMPILE_SPEED_FLAGS if _xla_accepts(flag)])
    os.environ["XLA_FLAGS"] = " ".join(
        filter(None, [os.environ.get("XLA_FLAGS"), "--xla_backend_optimization_level=0", *_accepted]))

import jax  # noqa: E402  (after XLA_FLAGS is set)

jax.config.update("jax_enable_x64", True)

# JAX's persistent compilation cache, as the scripts switch it on for users
# (`jaxdl.enable_compilation_cache`), in one fresh directory per test run that the xdist workers
# share (the controller makes it before it starts them; the environment carries it to them) and
# the controller removes at the end. It keeps a program compiled once per run when several
# tests compile the same one, as the recipe tests' repeated runs do (tests/test_train_lenet.py:
# 40 -> 28 s of CPU). It changes no program: a cached executable is the one XLA compiled for the
# same program, flags and jaxlib. Set in this process only (not in XLA_FLAGS or JAX's
# environment variables), so the subprocesses the tests start run as users do.
_CACHE_ENV = "JAXDL_TEST_COMPILATION_CACHE"
_OWN_CACHE = _CACHE_ENV not in os.environ
if _OWN_CACHE:
    os.environ[_CACHE_ENV] = tempfile.mkdtemp(prefix="jaxdl-test-xla-")
jax.config.update("jax_compilation_cache_dir", os.environ[_CACHE_ENV])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def pytest_unconfigure(config):
    if _OWN_CACHE and not hasattr(config, "workerinput"):
        shutil.rmtree(os.environ[_CACHE_ENV], ignore_errors=True)


#: Modules whose tests of one registry case share work (test_layer_properties.shared).
_GROUPED_BY_CASE = ("test_layer_properties.py", "test_autodiff.py")

#: Modules run first, in this order: the ones whose tests take 10-90 s each (subprocesses of
#: scripts, documented commands and examples; training runs), measured with ``--durations=0``
#: (2026-12-07). xdist's work stealing gives each worker a contiguous half of the collection and
#: steals from the end of a queue, so the last tests of a run are those at the end of the
#: collection: long ones there leave one worker idle while the other finishes them.
_LONG_FIRST = ("test_docs.py", "test_scripts.py", "test_kill_resume.py", "test_multiprocess.py", "test_training.py",
               "test_train_lenet.py", "test_resnet.py", "test_exercise_check.py", "test_precision.py",
               "test_recurrent_wrappers.py", "test_datasets.py", "test_cpu_mesh.py", "test_compilation_cache.py")


def pytest_collection_modifyitems(items):
    """Runs the modules of `_LONG_FIRST` first (each in its own order), then the others in
    theirs; and the tests of one registry case (parameter ``name``) of a grouped module one
    after the other, in the module's place: xdist's work stealing hands out contiguous runs of
    tests, so they land on the same worker and share their initialization, applies and
    compiled programs. The order is the same on every worker (xdist requires it)."""
    def rank(item):
        name = item.path.name
        return _LONG_FIRST.index(name) if name in _LONG_FIRST else len(_LONG_FIRST)

    items[:] = sorted(items, key=rank)  # stable: the collection's order within each rank

    def case(item):
        callspec = getattr(item, "callspec", None)
        return callspec.params.get("name") if callspec else None

    start = 0
    while start < len(items):
        path = items[start].path
        end = start
        while end < len(items) and items[end].path == path:
            end += 1
        if path.name in _GROUPED_BY_CASE:
            first = {}
            for item in items[start:end]:
                first.setdefault(case(item), len(first))
            items[start:end] = sorted(items[start:end], key=lambda item: first[case(item)])
        start = end

#!/usr/bin/env bash
# GPU portability check (issue 12): on one NVIDIA GPU, run the tests that can use it and the
# recurrent and LeNet benchmarks against PyTorch on CUDA (torch.nn.LSTM/RNN/GRU = cuDNN).
#
# How to run
#   Through the device tool (the working tree is copied to the GPU machine, the command runs
#   in the repository root, and what lands in $OUT comes back):
#       run(command="bash benchmarks/gpu_check.sh", timeout_s=600)
#   By hand on a CUDA machine:
#       OUT=/tmp/gpu_results bash benchmarks/gpu_check.sh
#   Nothing is installed: the python (PYTHON, default python3) must already have jax with its
#   CUDA plugin, optax, orbax-checkpoint, numpy, scipy, scikit-learn, pillow, matplotlib,
#   pytest (pytest-xdist used when present) and a CUDA build of torch; jaxdl is imported from
#   this checkout (PYTHONPATH=.). tensorflow-datasets, grain and array_record are NOT needed:
#   the test files that import them are left out (listed below, with the reason for each).
#
# Stages, each under a hard time limit (`timeout`, which kills the stage's whole process group):
#   env             nvidia-smi -L, versions, JAX's devices, torch's CUDA device; a small jitted
#                   program on the GPU with the test suite's XLA flag, checked against the CPU (a
#                   warning if it fails). No GPU for JAX or torch: exit 2, nothing else runs; jaxdl
#                   not importable: exit 1, nothing else runs.
#   tests-core      pytest over the layer, recurrent, loss/optimizer, training, model, bad-input,
#                   portability and one-device mesh tests.
#   tests-registry  pytest over the layer registry's properties (values, gradients, jvp, HVP,
#                   hessian) in float32 and float64, and the x64-off float32 checks.
#   bench-rnn       benchmarks/bench_rnn.py: jaxdl RNN/LSTM/GRU (fused and scan) on the GPU vs
#                   torch.nn.RNN/LSTM/GRU on CUDA.
#   bench-lenet     benchmarks/bench_lenet.py --device gpu: the LeNet train step, jaxdl in float32
#                   and bfloat16 compute vs PyTorch eager on CUDA.
#   Worst case (every limit reached) about 8.5 minutes; expected well under that on an H200.
#
# Output, in $OUT (default benchmarks/gpu_results; five files, so all come back from the device tool):
#   gpu_check.log   everything printed       environment.md   versions and devices
#   bench_rnn.md    the recurrent table      bench_lenet.md   the LeNet table
#   summary.md      each stage's status and time
# Exit status: 0 when every stage passed, 1 when one failed or ran out of time (summary.md says
# which; the other stages still run), 2 when there is no usable GPU.
#
# Settings (environment variables, all optional): PYTHON, OUT, STAGES (the stages to run, in
# order; default all of the above), PYTEST_WORKERS (pytest-xdist workers, default 8; 0: none),
# PYTEST_MAXFAIL (default 25), PYTEST_EXTRA (more pytest arguments, e.g. --collect-only),
# TEST_MATMUL_PRECISION (default highest, see below), ENV_TIMEOUT, CORE_TIMEOUT,
# REGISTRY_TIMEOUT, RNN_TIMEOUT, LENET_TIMEOUT (seconds), BENCH_RNN_ARGS, BENCH_LENET_ARGS, and
# REQUIRE_GPU=0 to let the env stage pass without a GPU (a dry run of the test selection on a
# CPU machine: REQUIRE_GPU=0 STAGES="env tests-core tests-registry" PYTEST_WORKERS=0
# PYTEST_EXTRA=--collect-only).
#
# Notes on the test settings
# * tests/conftest.py turns on x64 and appends --xla_backend_optimization_level=0 to XLA_FLAGS.
#   Both are fine on a GPU: XLA's GPU backend runs LLVM's O0 pipeline for it (ptxas still
#   optimizes) and the results are the same up to rounding; the env stage compiles a program
#   with that flag on the GPU and checks it against the CPU before the tests start.
# * TEST_MATMUL_PRECISION: JAX's default precision lets float32 matrix products and
#   convolutions on a GPU use TensorFloat-32 (about 3 significant digits), while the tests compare
#   float32 results with tolerances set for full float32 (and against float64 references), so
#   the tests run with JAX_DEFAULT_MATMUL_PRECISION=highest. The benchmarks keep JAX's and
#   PyTorch's defaults (environment.md records PyTorch's TF32 settings).
# * XLA_PYTHON_CLIENT_PREALLOCATE=false: several processes share the GPU (pytest workers, the
#   x64-off subprocess of test_float32.py, the benchmarks' PyTorch workers); JAX would otherwise
#   take 75% of the GPU's memory in the first of them.

set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
OUT=${OUT:-benchmarks/gpu_results}
STAGES=${STAGES:-env tests-core tests-registry bench-rnn bench-lenet}
PYTEST_WORKERS=${PYTEST_WORKERS:-8}
PYTEST_MAXFAIL=${PYTEST_MAXFAIL:-25}
PYTEST_EXTRA=${PYTEST_EXTRA:-}
export TEST_MATMUL_PRECISION=${TEST_MATMUL_PRECISION:-highest}
REQUIRE_GPU=${REQUIRE_GPU:-1}
ENV_TIMEOUT=${ENV_TIMEOUT:-60}
CORE_TIMEOUT=${CORE_TIMEOUT:-110}
REGISTRY_TIMEOUT=${REGISTRY_TIMEOUT:-140}
RNN_TIMEOUT=${RNN_TIMEOUT:-100}
LENET_TIMEOUT=${LENET_TIMEOUT:-100}
# Sized for about a minute each on an H200 (most of it compilation and process start-up).
BENCH_RNN_ARGS=${BENCH_RNN_ARGS:---cells rnn,lstm,gru --sizes default,large --implementations fused,scan --rounds 5 --calls 10 --threads 4}
BENCH_LENET_ARGS=${BENCH_LENET_ARGS:---batch 128 1024 --rounds 2 --repeats 5 --compute-dtype float32 bfloat16}

export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false

# ---------------------------------------------------------------- the test selection
# Run on the GPU: every test file that needs neither tensorflow-datasets nor grain (absent on
# the GPU machine) and computes with jaxdl on JAX's default device.
CORE_TESTS=(
    tests/test_portability.py            # jax.export for cpu/cuda/tpu; CPU fast paths only in the CPU lowering
    tests/test_layers.py                 # every layer's values and gradients (one test deselected below)
    tests/test_recurrent.py              # RNN/LSTM/GRU, fused vs scan, against PyTorch (on its CPU, float64)
    tests/test_losses_optimizers.py
    tests/test_regularization_layers.py
    tests/test_models.py
    tests/test_bad_inputs.py
    tests/test_training.py               # train/eval steps on scikit-learn's bundled digits and iris
    tests/test_fit.py                    # jaxdl.fit and NeuralNetwork
    tests/test_delayed_recall.py         # truncated BPTT
    tests/test_data_parallel.py          # its one-device mesh tests (the 4-CPU-device ones deselected below)
)
REGISTRY_TESTS=(
    tests/test_layer_properties.py       # registry: values, gradients, jvp vs finite differences, HVP, hessian
    tests/test_autodiff.py               # forward mode and second order through the fast paths
    tests/test_float32.py                # float32 results; an x64-off subprocess
)
DESELECT=(
    # Asserts that the compiled program of JAX's default backend takes the CPU fast paths
    # (a one-channel Conv as shifted slices): true on CPU only, by design. test_portability.py
    # checks the per-platform choice for every platform instead.
    --deselect tests/test_layers.py::test_conv_layer_takes_the_cpu_fast_paths
    # These read the `four_devices` fixture: a subprocess with 4 forced CPU devices that runs
    # scripts/train_lenet.py, which imports jaxdl.datasets (tensorflow-datasets).
    --deselect tests/test_data_parallel.py::test_the_command_line_trains_lenet_on_four_host_devices
    --deselect tests/test_data_parallel.py::test_three_lenet_steps_with_batch_norm_and_dropout_equal_one_device
    --deselect tests/test_data_parallel.py::test_batch_statistics_are_over_the_global_batch
    --deselect tests/test_data_parallel.py::test_dropout_masks_are_per_example_not_per_device
    --deselect tests/test_data_parallel.py::test_the_step_donates_its_state_and_spares_a_state_not_yet_on_the_mesh
    --deselect tests/test_data_parallel.py::test_evaluation_on_the_mesh_equals_one_device
    --deselect tests/test_data_parallel.py::test_a_batch_the_devices_cannot_split_is_a_clear_error
    --deselect tests/test_data_parallel.py::test_fit_and_neural_network_on_the_mesh_equal_one_device
    # Imports tests/test_train_lenet.py, which imports jaxdl.datasets (tensorflow-datasets).
    --deselect tests/test_data_parallel.py::test_bad_process_options_fail_before_joining
)
# Left out, and why:
#   test_datasets.py        imports tensorflow_datasets (MNIST preparation)
#   test_pipeline.py        imports grain and jaxdl.datasets.pipeline
#   test_precision.py       imports jaxdl.datasets.mnist at module level (tensorflow-datasets)
#   test_train_lenet.py     imports jaxdl.datasets (tensorflow-datasets) for the LeNet recipe
#   test_multiprocess.py    several processes with forced CPU devices and gloo: CPU by design
#   test_checkpoint.py      files and SIGKILL at write boundaries (a subprocess forks after
#   test_kill_resume.py       importing JAX: unsafe once CUDA is up); nothing device-specific
#   test_exercise_*.py      the course's stateful NumPy facade (test_exercise_scaffold: MNIST files)
#   test_docs.py, test_readme.py   documentation, no computation

# ---------------------------------------------------------------- helpers
SUMMARY="$OUT/summary.md"
FAILED=()
LAST_STATUS=0

stage_selected() { [[ " $STAGES " == *" $1 "* ]]; }

existing() {  # the given test files that exist; a note for each missing one
    local file
    for file in "$@"; do
        if [ -f "$file" ]; then echo "$file"; else echo "NOTE: $file is not in this checkout: skipped" >&2; fi
    done
}

run_stage() {  # NAME LIMIT_SECONDS COMMAND...: runs COMMAND under the limit, records the outcome
    local name=$1 limit=$2 rc=0 start=$SECONDS status shown
    shift 2
    shown="$*"
    echo
    echo "=== $name (limit ${limit} s): ${shown%%$'\n'*}"
    timeout --kill-after=15 "$limit" "$@" </dev/null || rc=$?
    if [ "$rc" -eq 0 ]; then
        status="passed"
    elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        status="TIMED OUT (limit ${limit} s)"
    else
        status="FAILED (exit status $rc)"
    fi
    echo "=== $name: $status in $((SECONDS - start)) s"
    LAST_STATUS=$rc
    echo "| $name | $status | $((SECONDS - start)) |" >>"$SUMMARY"
    if [ "$rc" -ne 0 ]; then FAILED+=("$name"); fi
    return 0
}

ENV_PY=$(cat <<'PYTHON_END'
"""Prints (and writes to argv[1] as markdown) the versions and devices.

Exit status 2 without a usable GPU (JAX's or PyTorch's) when argv[2] is "1"; a failing smoke
test is only a warning (the benchmarks do not use the test suite's XLA flag).
"""
import importlib.metadata
import os
import platform
import subprocess
import sys
import time

out_path, require_gpu = sys.argv[1], sys.argv[2] == "1"
lines, problems, warnings = [], [], []


def say(line=""):
    print(line, flush=True)
    lines.append(line)


say(f"# GPU check environment, {time.strftime('%Y-%m-%d %H:%M %Z')}")
say()
say(f"- host: {platform.node()}, {os.cpu_count()} CPUs, {platform.platform()}")
say(f"- python {sys.version.split()[0]} ({sys.executable})")
versions = []
for name in ("jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda12-plugin", "optax", "orbax-checkpoint", "numpy",
             "scipy", "scikit-learn", "pytest", "pytest-xdist", "torch", "tensorflow-datasets", "grain",
             "array-record"):
    try:
        versions.append(f"{name} {importlib.metadata.version(name)}")
    except importlib.metadata.PackageNotFoundError:
        if not name.startswith("jax-cuda"):
            versions.append(f"{name} (not installed)")
say("- packages: " + ", ".join(versions))
say(f"- XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, "
    f"XLA_PYTHON_CLIENT_PREALLOCATE={os.environ.get('XLA_PYTHON_CLIENT_PREALLOCATE')}")

import jax  # noqa: E402

backend = jax.default_backend()
devices = jax.devices()
say(f"- jax {jax.__version__}: default backend {backend}; devices: "
    + ", ".join(f"{d.platform}:{d.id} {d.device_kind}" for d in devices)
    + f"; matmul precision {os.environ.get('JAX_DEFAULT_MATMUL_PRECISION', 'default')} (the tests: "
    + f"{os.environ.get('TEST_MATMUL_PRECISION', 'highest')})")
if backend != "gpu":
    problems.append(f"JAX's default backend is {backend!r}, not a GPU (is the CUDA plugin of jax installed?)")

import jaxdl  # noqa: E402

say(f"- jaxdl {jaxdl.__version__} from {os.path.dirname(jaxdl.__file__)}")

try:
    import torch
except ImportError:
    problems.append("torch is not installed")
else:
    if torch.cuda.is_available():
        matmul_tf32 = getattr(torch.backends.cuda.matmul, "allow_tf32", "?")
        cudnn_tf32 = getattr(torch.backends.cudnn, "allow_tf32", "?")
        say(f"- torch {torch.__version__} (CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}): "
            f"{torch.cuda.get_device_name()}, {torch.cuda.device_count()} GPUs; TF32 allowed in matmul "
            f"{matmul_tf32}, in cuDNN {cudnn_tf32}")
    else:
        problems.append(f"CUDA is not available to torch {torch.__version__} "
                        f"(built for CUDA {torch.version.cuda or 'none: a CPU-only build'})")

# A jitted program (conv, matmul, scan, grad) with the test suite's XLA flag, on the default
# device and on the CPU, float32 and float64: the flag must not break or change GPU programs.
SMOKE = """
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
def loss(w, x):
    y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME")
    h = jnp.tanh(y.reshape(y.shape[0], -1) @ jnp.ones((y[0].size, 8), x.dtype))
    _, hs = jax.lax.scan(lambda c, r: (jnp.tanh(c + r), c), jnp.zeros(8, x.dtype), h)
    return jnp.sum(hs ** 2)
f = jax.jit(jax.value_and_grad(loss))
for dtype, rtol in ((np.float32, 1e-4), (np.float64, 1e-10)):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 1, 3, 3)).astype(dtype) / 10
    x = rng.normal(size=(5, 1, 12, 12)).astype(dtype) / 10
    here = f(w, x)  # on the default device
    cpu = f(*jax.device_put((w, x), jax.devices("cpu")[0]))  # jit follows its inputs' device
    for a, b in zip(jax.tree.leaves(here), jax.tree.leaves(cpu)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=rtol)
    print(f"{np.dtype(dtype).name} on {jax.devices()[0].device_kind}: value {float(here[0]):.6g}, same as the CPU")
"""
flag = "--xla_backend_optimization_level=0"
environment = {**os.environ, "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip(),
               "JAX_DEFAULT_MATMUL_PRECISION": os.environ.get("TEST_MATMUL_PRECISION", "highest")}
try:
    done = subprocess.run([sys.executable, "-c", SMOKE], env=environment, capture_output=True, text=True, timeout=120)
    if done.returncode == 0:
        say(f"- smoke test with tests/conftest.py's {flag}: " + "; ".join(done.stdout.strip().splitlines()))
    else:
        warnings.append(f"the smoke test with {flag} failed:\n{done.stderr[-3000:]}")
except subprocess.TimeoutExpired:
    warnings.append(f"the smoke test with {flag} took over 120 s")

for warning in warnings:
    say(f"- WARNING: {warning}")
for problem in problems:
    say(f"- PROBLEM: {problem}")
with open(out_path, "w") as f:
    f.write("\n".join(lines) + "\n")
sys.exit(2 if problems and require_gpu else 0)
PYTHON_END
)

# ---------------------------------------------------------------- the stages
main() {
    echo "# gpu_check.sh, $(date '+%Y-%m-%d %H:%M:%S %Z'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "PYTHON=$PYTHON ($(command -v "$PYTHON" || echo 'not found')), OUT=$OUT, STAGES=$STAGES"
    {
        echo "# gpu_check.sh summary, $(date '+%Y-%m-%d %H:%M %Z')"
        echo
        echo "| stage | status | seconds |"
        echo "|---|---|---|"
    } >"$SUMMARY"

    if stage_selected env; then
        echo
        echo "=== nvidia-smi -L"
        if command -v nvidia-smi >/dev/null; then
            timeout 30 nvidia-smi -L || echo "nvidia-smi -L failed (exit status $?)"
            timeout 30 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
        else
            echo "nvidia-smi: not found"
        fi
        run_stage env "$ENV_TIMEOUT" "$PYTHON" -c "$ENV_PY" "$OUT/environment.md" "$REQUIRE_GPU"
        if [ "$LAST_STATUS" -eq 2 ]; then
            echo
            echo "GPU CHECK STOPPED: no usable GPU (see above); nothing else was run."
            echo "| (the rest) | not run: no usable GPU | 0 |" >>"$SUMMARY"
            return 2
        elif [ "$LAST_STATUS" -ne 0 ]; then
            echo
            echo "GPU CHECK STOPPED: the environment check failed (see above); nothing else was run."
            echo "| (the rest) | not run: the environment check failed | 0 |" >>"$SUMMARY"
            return 1
        fi
    fi

    local pytest=("$PYTHON" -m pytest -q -p no:cacheprovider --maxfail="$PYTEST_MAXFAIL" --durations=10
                  --continue-on-collection-errors)
    if [ "$PYTEST_WORKERS" != 0 ] && "$PYTHON" -c "import xdist" 2>/dev/null; then
        pytest+=(-n "$PYTEST_WORKERS")
    fi
    # shellcheck disable=SC2206  # PYTEST_EXTRA is a list of words on purpose
    local extra=($PYTEST_EXTRA)
    local files
    if stage_selected tests-core; then
        mapfile -t files < <(existing "${CORE_TESTS[@]}")
        [ "${#files[@]}" -gt 0 ] || { echo "no test files found" >&2; return 1; }  # pytest would run tests/
        run_stage tests-core "$CORE_TIMEOUT" env JAX_DEFAULT_MATMUL_PRECISION="$TEST_MATMUL_PRECISION" \
            "${pytest[@]}" "${files[@]}" "${DESELECT[@]}" "${extra[@]}"
    fi
    if stage_selected tests-registry; then
        mapfile -t files < <(existing "${REGISTRY_TESTS[@]}")
        [ "${#files[@]}" -gt 0 ] || { echo "no test files found" >&2; return 1; }
        run_stage tests-registry "$REGISTRY_TIMEOUT" env JAX_DEFAULT_MATMUL_PRECISION="$TEST_MATMUL_PRECISION" \
            "${pytest[@]}" "${files[@]}" "${extra[@]}"
    fi

    if stage_selected bench-rnn; then
        # shellcheck disable=SC2086  # the arguments are words on purpose
        run_stage bench-rnn "$RNN_TIMEOUT" "$PYTHON" benchmarks/bench_rnn.py --torch-device cuda \
            $BENCH_RNN_ARGS --markdown "$OUT/bench_rnn.md"
    fi
    if stage_selected bench-lenet; then
        # The table is bench_lenet.py's standard output; its workers' errors go to the log.
        # shellcheck disable=SC2086
        run_stage bench-lenet "$LENET_TIMEOUT" bash -o pipefail -c '"$@" | tee "$LENET_TABLE"' bench_lenet \
            "$PYTHON" benchmarks/bench_lenet.py --device gpu $BENCH_LENET_ARGS
    fi

    echo
    cat "$SUMMARY"
    if [ "${#FAILED[@]}" -ne 0 ]; then
        echo
        echo "GPU CHECK FAILED: ${FAILED[*]} (see $OUT/gpu_check.log)"
        return 1
    fi
    echo
    echo "GPU check passed; results in $OUT"
}

mkdir -p "$OUT"
export LENET_TABLE="$OUT/bench_lenet.md"
# errexit and pipefail: the script's status is main's (tee's is 0)
main 2>&1 | tee "$OUT/gpu_check.log"

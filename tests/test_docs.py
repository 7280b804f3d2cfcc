"""The documentation site: its examples run, it builds with ``--strict``, and it renders.

Conventions for every page under docs/ (also stated in docs/contributing.md):

* Every fenced block opened with ```` ```python ```` is executed as a user runs it: the
  blocks of one page run in order, in one namespace, in a process of their own started from a
  plain interpreter with JAX's defaults (none of the suite's XLA flags, no x64:
  `plain_python.run_markdown_pages`), with a new empty temporary directory as the working
  directory. A block that raises fails `test_python_blocks_run`, with the traceback.
* Blocks that must not run are fenced as ```` ```text ````, ```` ```console ```` or
  ```` ```bash ```` (commands, output, sketches with undefined names).
* Examples stay fast: tiny shapes, a few steps, no downloads (no MNIST).

`test_custom_layer_passes_the_registry_properties` runs every generic property test of
test_layer_properties.py over the layer that docs/guides/layers.md defines, as an entry of
tests/layer_registry.py would be.

The site tests need the ``docs`` extra (mkdocs-material, mkdocstrings); the browser test needs
Debian's ``chromium`` at /usr/bin/chromium and is skipped, with the reason, without it. It
serves the site built by ``mkdocs build --strict`` on 127.0.0.1 from a thread, reads three
pages' rendered DOM (``chromium --dump-dom``) and takes two screenshots into its ``tmp_path``
(``JAXDL_DOCS_SCREENSHOTS=DIR`` copies them to DIR as well, to look at). Screenshots are taken
of URLs without a ``#fragment``: headless Chromium 150 paints a blank page for those.
"""

from __future__ import annotations

import functools
import html
import http.server
import inspect
import os
import pathlib
import re
import shutil
import subprocess
import sys
import threading
import types

import jax.numpy as jnp
import pytest
from plain_python import run_markdown_pages

import jaxdl

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CHROMIUM = pathlib.Path("/usr/bin/chromium")
#: Copy the browser screenshots into this directory as well (for looking at them by hand).
SCREENSHOT_COPY_ENV = "JAXDL_DOCS_SCREENSHOTS"

_FENCE = re.compile(r"^(?P<indent>[ \t]*)```python[^\n]*\n(?P<code>.*?)^(?P=indent)```[ \t]*$", re.M | re.S)


def python_blocks(page: pathlib.Path) -> list[tuple[int, str]]:
    """The ```python blocks of ``page``: (line number of the first code line, dedented code)."""
    text = page.read_text()
    blocks = []
    for match in _FENCE.finditer(text):
        indent = len(match["indent"])
        code = "".join(line[indent:] for line in match["code"].splitlines(keepends=True))
        blocks.append((text.count("\n", 0, match.start("code")) + 1, code))
    return blocks


def run_page(page: pathlib.Path, blocks: list[tuple[int, str]] | None = None) -> dict:
    """Executes the page's python blocks (or ``blocks`` of it) in order in one new module;
    returns its namespace.

    The module is registered in `sys.modules` (as dataclasses need). Each block is compiled
    with the page's path and its line numbers, so a traceback points into the Markdown file.
    """
    module = types.ModuleType("docs_page_" + re.sub(r"\W", "_", str(page.relative_to(DOCS))))
    sys.modules[module.__name__] = module  # dataclasses look their module up there
    for line, code in python_blocks(page) if blocks is None else blocks:
        exec(compile("\n" * (line - 1) + code, str(page.relative_to(ROOT)), "exec"), module.__dict__)
    return module.__dict__


PAGES = sorted(DOCS.rglob("*.md"))
PAGES_WITH_CODE = [page for page in PAGES if python_blocks(page)]
#: The pages split in two processes of about equal work (two workers run them side by side).
PAGE_GROUPS = [PAGES_WITH_CODE[0::2], PAGES_WITH_CODE[1::2]]


def test_the_guides_have_examples():
    names = {str(page.relative_to(DOCS)) for page in PAGES_WITH_CODE}
    for page in ("index.md", "students.md", "guides/layers.md", "guides/training.md", "guides/recurrent.md",
                 "guides/regularization.md", "guides/checkpoints.md"):
        assert page in names
    assert sorted(page for group in PAGE_GROUPS for page in group) == PAGES_WITH_CODE


def test_python_fences_are_spelled_python():
    """A ```py, ```python3 or ```pycon block would be neither run nor marked as not to run."""
    for page in [ROOT / "README.md", *PAGES]:
        assert not re.search(r"^[ \t]*```(?:py|python3|pycon|ipython)\b", page.read_text(), re.M), page


def section_blocks(page: pathlib.Path, first: str, end: str) -> list[tuple[int, str]]:
    """The page's first python block (its imports) and its blocks from the heading ``first``
    up to the heading ``end``."""
    lines = page.read_text().splitlines()
    start, stop = lines.index(first) + 1, lines.index(end) + 1  # 1-based line numbers
    blocks = python_blocks(page)
    return blocks[:1] + [(line, code) for line, code in blocks[1:] if start < line < stop]


@pytest.mark.parametrize("pages", PAGE_GROUPS, ids=["group0", "group1"])
def test_python_blocks_run(pages, tmp_path):
    results = run_markdown_pages({str(page.relative_to(ROOT)): python_blocks(page) for page in pages}, tmp_path)
    failed = {page: output for page, (passed, output) in results.items() if not passed}
    assert not failed, "\n\n".join(f"{page}: {output}" for page, output in failed.items())


# ------------------------------------------------------------------ the worked custom layer


def _property_tests():
    import test_layer_properties

    return [fn for name, fn in sorted(vars(test_layer_properties).items()) if name.startswith("test_")]


@pytest.fixture(scope="module")
def custom_layer_case(tmp_path_factory):
    """The registry entry ``(name, layer, input_shape)`` defined by docs/guides/layers.md: its
    imports and its sections from "Writing a layer" on, run in this process in a temporary
    directory (the whole page runs in test_python_blocks_run)."""
    page = DOCS / "guides" / "layers.md"
    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp(page.stem))
    try:
        namespace = run_page(page, section_blocks(page, "## Writing a layer", "## Layers for research models"))
    finally:
        os.chdir(cwd)
    return namespace["REGISTRY_ENTRY"]


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("property_test", _property_tests(), ids=lambda fn: fn.__name__)
def test_custom_layer_passes_the_registry_properties(property_test, dtype, custom_layer_case):
    name, layer, shape = custom_layer_case
    arguments = {"name": name, "layer": layer, "shape": shape, "dtype": dtype}
    if "train" in inspect.signature(property_test).parameters:
        for train in (False, True):
            property_test(**arguments, train=train)
    else:
        property_test(**arguments)


# ------------------------------------------------------------------ the API reference


def _documented(prefix: str) -> set[str]:
    text = "\n".join(page.read_text() for page in (DOCS / "api").glob("*.md"))
    return set(re.findall(rf"^::: {re.escape(prefix)}\.(\w+)$", text, flags=re.M))


def test_api_reference_documents_every_public_name():
    import jaxdl.exercise

    assert set(jaxdl.__all__) - _documented("jaxdl") == set()
    assert set(jaxdl.exercise.__all__) - _documented("jaxdl.exercise") == set()


def test_benchmark_plots_are_made_from_the_results(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "plot_results.py"), "--output-dir", str(tmp_path)],
                   check=True, capture_output=True, text=True, timeout=120)
    made = sorted(path.name for path in tmp_path.glob("*.png"))
    assert made == sorted(path.name for path in (DOCS / "assets" / "benchmarks").glob("*.png"))


# ------------------------------------------------------------------ the built site


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> pathlib.Path:
    """The site built by ``mkdocs build --strict`` into a temporary directory."""
    pytest.importorskip("mkdocs", reason="the docs extra is not installed: pip install -e '.[docs]'")
    pytest.importorskip("mkdocstrings", reason="the docs extra is not installed: pip install -e '.[docs]'")
    site_dir = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
         "--site-dir", str(site_dir)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    return site_dir


def test_mkdocs_build_strict(site):
    assert (site / "index.html").is_file()
    assert (site / "api" / "recurrent" / "index.html").is_file()
    assert (site / "assets" / "lenet" / "metrics.png").is_file()


def test_site_loads_nothing_from_the_network(site):
    """No stylesheet, script, font or image from another host: the site works offline."""
    external = re.compile(r"""<(?:script|img|link)\b[^>]*\b(?:src|href)=["']?(?:https?:)?//""", re.I)
    for page in site.rglob("*.html"):
        assert not external.search(page.read_text()), page
    for sheet in site.rglob("*.css"):
        assert "fonts.googleapis" not in sheet.read_text(), sheet


# ------------------------------------------------------------------ in a browser


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass


@pytest.fixture(scope="module")
def served_site(site):
    """``http://127.0.0.1:<free port>`` serving the built site from a thread."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _chromium(profile: pathlib.Path, *arguments: str) -> subprocess.CompletedProcess:
    """Runs headless Chromium with a new profile and no background network traffic."""
    command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-dev-shm-usage", f"--user-data-dir={profile}", *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(profile)})


def _rendered_text(dom: str) -> str:
    """The DOM's text: tags removed, entities decoded, whitespace collapsed."""
    text = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S | re.I)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", text)).split())


def _dump_dom(tmp_path: pathlib.Path, url: str) -> str:
    result = _chromium(tmp_path / "profile", "--virtual-time-budget=5000", "--dump-dom", url)
    assert result.returncode == 0 and "</html>" in result.stdout, f"chromium --dump-dom {url}:\n{result.stderr}"
    return result.stdout


def _screenshot(tmp_path: pathlib.Path, url: str, name: str) -> pathlib.Path:
    path = tmp_path / name
    result = _chromium(tmp_path / "profile", "--hide-scrollbars", "--window-size=1280,900",
                       f"--screenshot={path}", url)
    assert result.returncode == 0 and path.is_file() and path.stat().st_size > 10_000, (
        f"chromium --screenshot {url}:\n{result.stderr}")
    if os.environ.get(SCREENSHOT_COPY_ENV):
        copies = pathlib.Path(os.environ[SCREENSHOT_COPY_ENV])
        copies.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, copies / name)
    return path


NAVIGATION = ("Getting started", "For students", "For researchers", "LeNet on MNIST", "Performance",
              "API reference")


def _signature_parameters(dom: str, name: str) -> list[str]:
    """The parameter names of the rendered signature of ``name`` (e.g. "jaxdl.LSTM")."""
    match = re.search(rf'id="{re.escape(name)}".*?<div class="doc-signature[^"]*">(.*?)</code>', dom, flags=re.S)
    assert match, f"no rendered signature for {name}"
    signature = "".join(_rendered_text(match.group(1)).split())
    assert signature.startswith(name.rsplit(".", 1)[-1] + "("), signature
    return re.findall(r"[(,](\w+):", signature)


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no {CHROMIUM}: install Debian's chromium package "
                                                 f"(apt-get install chromium) to check the site in a browser")
def test_site_renders_in_headless_chromium(served_site, tmp_path):
    landing = _dump_dom(tmp_path, f"{served_site}/")
    assert re.search(r"<title>\s*jaxdl\s*</title>", landing)
    assert 'class="md-nav' in landing and all(entry in _rendered_text(landing) for entry in NAVIGATION)

    guide = _dump_dom(tmp_path, f"{served_site}/guides/training/")
    assert re.search(r"<title>\s*Training with fit - jaxdl\s*</title>", guide)
    assert 'class="md-nav' in guide and all(entry in _rendered_text(guide) for entry in NAVIGATION)
    assert "jaxdl.fit(" in "".join(_rendered_text(guide).split())   # a highlighted code example

    api = _dump_dom(tmp_path, f"{served_site}/api/recurrent/")
    assert re.search(r"<title>\s*Recurrent layers - jaxdl\s*</title>", api)
    assert 'class="md-nav' in api and "API reference" in _rendered_text(api)
    # The signature shown is the constructor's: every dataclass field, in order, with types.
    assert _signature_parameters(api, "jaxdl.LSTM") == list(inspect.signature(jaxdl.LSTM).parameters)

    _screenshot(tmp_path, f"{served_site}/", "landing.png")
    _screenshot(tmp_path, f"{served_site}/api/recurrent/", "api_lstm.png")  # LSTM is the page's first entry

"""The browser page of `examples/browser/`: the digits memory exported to ONNX and run
by onnxruntime-web in headless Chromium recalls what JAX recalls, and draws it.

Needs Debian's `chromium`, Node and `npm ci --prefix examples/browser` (onnxruntime-web
and playwright-core), which `.ci/run` installs. Without them the test is skipped,
except in CI (`CI` set), where it fails."""

import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import threading

import numpy as np
import pytest


ROOT = pathlib.Path(__file__).resolve().parents[1]
BROWSER = ROOT / "examples" / "browser"


def _missing() -> list[str]:
    missing = []
    if not (os.environ.get("CHROMIUM") or shutil.which("chromium")):
        missing.append("Chromium (`apt-get install chromium`)")
    if not shutil.which("node"):
        missing.append("Node (`apt-get install nodejs npm`)")
    for package in ("onnxruntime-web", "playwright-core"):
        if not (BROWSER / "node_modules" / package).exists():
            missing.append(f"{package} (`npm ci --prefix examples/browser`)")
    for module in ("jax2onnx", "onnx", "sklearn"):
        if importlib.util.find_spec(module) is None:
            missing.append(f"the Python module {module} (`pip install -e '.[test]'`)")
    return missing


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    missing = _missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"the browser test needs {', '.join(missing)}")
        pytest.skip(f"needs {', '.join(missing)}")
    spec = importlib.util.spec_from_file_location("browser_build", BROWSER / "build.py")
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    site = tmp_path_factory.mktemp("site")
    built = build.build(site)
    screenshot = tmp_path_factory.mktemp("screenshot") / "browser.png"
    with build.server(site, port=0) as httpd:
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        try:
            run = subprocess.run(
                [
                    "node",
                    "check_page.mjs",
                    f"http://127.0.0.1:{httpd.server_port}/",
                    str(screenshot),
                    os.environ.get("CHROMIUM") or shutil.which("chromium") or "",
                ],
                cwd=BROWSER,
                capture_output=True,
                text=True,
                timeout=240,
            )
        finally:
            httpd.shutdown()
    assert run.returncode == 0, run.stderr[-4000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    return built, result, screenshot


def test_page_recalls_what_jax_recalls(page):
    built, result, _ = page
    assert "error" not in result, result
    recalled = np.asarray(result["recalled"], np.float32)
    reference = built["recalled"]
    assert recalled.shape == reference.shape == (8, 64)
    np.testing.assert_allclose(recalled, reference, rtol=1e-4, atol=1e-4)
    # Not a copy of its input: the masked lower halves are filled in.
    query = built["inputs"][0]
    assert np.max(np.abs(recalled - query)) > 0.5


def test_page_draws_the_recall(page, tmp_path):
    built, result, screenshot = page
    drawn = np.asarray(result["drawn"], np.float64)
    expected = np.round(255 * (1 - np.clip(built["recalled"], 0, 1)))
    assert drawn.shape == expected.shape
    assert np.max(np.abs(drawn - expected)) <= 1
    assert "Recalled 8 digits" in result["status"]
    assert "onnxruntime-web" in result["status"]
    png = screenshot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000

"""The digits memory of `python -m hamux_lagr.demo`, exported to ONNX and run in the
browser by onnxruntime-web.

    python examples/browser/build.py --serve

installs onnxruntime-web from the npm registry into `examples/browser/node_modules`
(`npm ci`, once), builds the page into `examples/browser/site/` and serves it at
http://localhost:8000 (Ctrl-C stops it). The page shows corrupted digits, recalls
them with the exported memory, and shows each recall next to the true digit.

The site holds `index.html` and `app.mjs` (from this folder), `digits.onnx` (the
memory and its recall, from `hamux_lagr.to_onnx`), `digits.json` (the corrupted
digits and their truths) and `ort/` (onnxruntime-web's WebAssembly build, copied from
`node_modules`: the page loads nothing from elsewhere).

The memory and the corruptions are the main example's: `hamux_lagr.demo`'s
`load_data`, `corrupt` and `softmax_memory` (all 1797 digits, `LSoftmax(beta=100)`),
and its recall, a read with the known pixels only, then Euler steps of the full
energy.
"""

import argparse
import functools
import http.server
import json
import pathlib
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

import hamux_lagr as hl
from hamux_lagr import demo


HERE = pathlib.Path(__file__).resolve().parent
PAGE_FILES = ("index.html", "app.mjs")
# onnxruntime-web's WebAssembly-only build: its module and the runtime it loads.
ORT_FILES = (
    "ort.wasm.min.mjs",
    "ort-wasm-simd-threaded.mjs",
    "ort-wasm-simd-threaded.wasm",
)
BETA, STEPS, DT = 100.0, 20, 0.1


def recall_function(ham: hl.HAM, *, steps: int = STEPS, dt: float = DT):
    """The main example's recall of a batch: `(queries, known, clamped) -> images`,
    all `(batch, 64)`, the masks as 0/1 floats (ONNX inputs are plain tensors).

    One step of size 1 reads the memory with the confidence channel set to the known
    pixels, then `steps` Euler steps settle the full energy (confidence 1); pixels
    with `clamped = 1` are held throughout (as `hamux_lagr.demo.recall_softmax`
    does). `throw=False`: an exported model reports nothing at run time.
    """

    def one(query, known, clamped):
        held = jnp.stack([clamped > 0.5, jnp.ones_like(clamped, dtype=bool)])
        clamp = {"image": held}
        read = {"image": jnp.stack([query, known])}
        x = hl.descend(
            ham, read, steps=1, dt=1.0, clamp=clamp, trace=False, throw=False
        )
        trusted = {"image": x.xs["image"].at[1].set(1.0)}
        sol = hl.descend(ham, trusted, steps=steps, dt=dt, clamp=clamp, throw=False)
        return sol.xs["image"][0]

    return jax.vmap(one)


def page_digits(count: int, seed: int) -> dict:
    """`count` stored digits, the first half with their lower half masked, the
    others with 30% noise (`hamux_lagr.demo.corrupt`)."""
    images, labels = demo.load_data()
    rng = np.random.default_rng(seed)
    targets = np.sort(rng.choice(len(images), count, replace=False))
    halves = np.array_split(targets, 2)
    rows = []
    for kind, chosen in zip(demo.CORRUPTIONS, halves):
        queries, known, hold = demo.corrupt(images[chosen], kind, rng)
        for i, t in enumerate(chosen):
            rows.append(
                dict(
                    kind=kind,
                    index=int(t),
                    label=int(labels[t]),
                    query=queries[i],
                    known=known[i].astype(np.float32),
                    clamped=(known[i] & hold).astype(np.float32),
                    truth=images[t],
                )
            )
    return dict(images=images, rows=rows)


def build(
    out_dir: str | pathlib.Path,
    *,
    count: int = 8,
    seed: int = 0,
    beta: float = BETA,
    steps: int = STEPS,
    dt: float = DT,
) -> dict:
    """Builds the site into `out_dir`; returns the inputs, the JAX recall and the
    model's path."""
    out = pathlib.Path(out_dir)
    ort_dist = HERE / "node_modules" / "onnxruntime-web" / "dist"
    if not all((ort_dist / f).exists() for f in ORT_FILES):
        raise FileNotFoundError(
            f"onnxruntime-web is not installed in {HERE / 'node_modules'}: run "
            f"`npm ci --prefix {HERE}` (or `python {__file__} --serve`, which does)."
        )
    digits = page_digits(count, seed)
    rows = digits["rows"]
    ham = demo.softmax_memory(digits["images"], beta)
    recall = recall_function(ham, steps=steps, dt=dt)
    inputs = [np.stack([r[k] for r in rows]) for k in ("query", "known", "clamped")]
    (out / "ort").mkdir(parents=True, exist_ok=True)
    hl.to_onnx(recall, *inputs, path=out / "digits.onnx")
    for name in PAGE_FILES:
        shutil.copy2(HERE / name, out / name)
    for name in ORT_FILES:
        shutil.copy2(ort_dist / name, out / "ort" / name)
    side = demo.SIDE
    page = dict(
        side=side,
        count=len(rows),
        memory=f"DenseMemory of {len(digits['images'])} digits, LSoftmax(beta={beta:g})",
        recall=f"a read, then {steps} Euler steps (dt={dt:g})",
        digits=[
            dict(
                kind=r["kind"],
                label=r["label"],
                index=r["index"],
                query=r["query"].round(6).tolist(),
                known=r["known"].tolist(),
                clamped=r["clamped"].tolist(),
                truth=r["truth"].round(6).tolist(),
            )
            for r in rows
        ],
    )
    (out / "digits.json").write_text(json.dumps(page), encoding="utf-8")
    # The page feeds the model what it reads from digits.json: JAX's recall of the
    # same (rounded) inputs is the reference.
    keys = ("query", "known", "clamped")
    rounded = [np.asarray([d[k] for d in page["digits"]], np.float32) for k in keys]
    recalled = np.asarray(jax.jit(recall)(*rounded))
    return dict(inputs=rounded, recalled=recalled, model=out / "digits.onnx")


class _Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".mjs": "text/javascript",
        ".wasm": "application/wasm",
        ".onnx": "application/octet-stream",
    }

    def log_message(self, format, *args):  # quiet: the test serves many files
        pass


def server(directory: str | pathlib.Path, port: int = 8000):
    """A threaded HTTP server of `directory` on localhost (`port=0`: any free one)."""
    handler = functools.partial(_Handler, directory=str(directory))
    return http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(HERE / "site"), help="site folder")
    parser.add_argument("--count", type=int, default=8, help="digits on the page")
    parser.add_argument("--seed", type=int, default=0, help="which digits, which noise")
    parser.add_argument("--serve", action="store_true", help="serve the site")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    if not (HERE / "node_modules" / "onnxruntime-web").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=HERE, check=True)
    result = build(args.out, count=args.count, seed=args.seed)
    print(
        f"Built the page in {args.out} ({result['model'].stat().st_size // 1024} KiB model)."
    )
    if args.serve:
        with server(args.out, args.port) as httpd:
            print(
                f"Serving it at http://localhost:{httpd.server_port}/ (Ctrl-C stops)."
            )
            try:
                httpd.serve_forever()
            except KeyboardInterrupt:
                pass


if __name__ == "__main__":
    sys.exit(main())

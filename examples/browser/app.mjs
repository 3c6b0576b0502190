// Runs digits.onnx (hamux_lagr.to_onnx of the digits memory) with onnxruntime-web's
// WebAssembly backend on the corrupted digits of digits.json, and draws each recall
// between its query and its truth. `window.hamuxRecall` holds the result (read by
// the test in tests/test_browser.py): the recalled pixels, or the error.
import * as ort from "./ort/ort.wasm.min.mjs";

const status = document.getElementById("status");
const grid = document.getElementById("grid");
const button = document.getElementById("recall");

// Single-threaded: threads need a cross-origin-isolated page, which a plain static
// server does not give.
ort.env.wasm.numThreads = 1;
ort.env.logLevel = "error"; // not the notes on initialisers the model leaves unused

function draw(canvas, pixels, side, known) {
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(side, side);
  for (let i = 0; i < side * side; i++) {
    const v = Math.round(255 * (1 - Math.min(1, Math.max(0, pixels[i]))));
    const unknown = known && known[i] < 0.5;
    // Dark ink on white; unknown pixels of a masked query in light blue.
    image.data.set(unknown ? [159, 195, 255, 255] : [v, v, v, 255], 4 * i);
  }
  ctx.putImageData(image, 0, 0);
}

function figure(title, side) {
  const fig = document.createElement("figure");
  const canvas = document.createElement("canvas");
  canvas.width = side;
  canvas.height = side;
  const caption = document.createElement("figcaption");
  caption.textContent = title;
  fig.append(canvas, caption);
  return [fig, canvas];
}

async function main() {
  const data = await (await fetch("digits.json")).json();
  const { side, count } = data;
  const size = side * side;
  document.getElementById("about").textContent =
    `${data.memory}; recall: ${data.recall}. Below, ${count} of the stored digits, corrupted.`;
  const session = await ort.InferenceSession.create("digits.onnx", {
    executionProviders: ["wasm"],
    logSeverityLevel: 3,
  });
  const feed = (key) =>
    new ort.Tensor("float32", Float32Array.from(data.digits.flatMap((d) => d[key])), [count, size]);
  const canvases = data.digits.map((d) => {
    const cell = document.createElement("div");
    const caption = document.createElement("div");
    caption.className = "caption";
    caption.textContent = `digit ${d.label}, ${d.kind}`;
    const row = document.createElement("div");
    row.className = "row";
    const [q, qc] = figure("query", side);
    const [r, rc] = figure("recall", side);
    const [t, tc] = figure("truth", side);
    row.append(q, r, t);
    cell.append(caption, row);
    grid.append(cell);
    draw(qc, d.query, side, d.known);
    draw(tc, d.truth, side);
    rc.dataset.role = "recall";
    return rc;
  });

  async function recall() {
    button.disabled = true;
    const start = performance.now();
    const out = await session.run({
      input_0: feed("query"),
      input_1: feed("known"),
      input_2: feed("clamped"),
    });
    const ms = performance.now() - start;
    const pixels = out.output_0.data;
    const recalled = [];
    canvases.forEach((canvas, b) => {
      const image = Array.from(pixels.subarray(b * size, (b + 1) * size));
      recalled.push(image);
      draw(canvas, image, side);
    });
    status.textContent =
      `Recalled ${count} digits in ${ms.toFixed(0)} ms with onnxruntime-web ` +
      `${ort.env.versions.web} (WebAssembly).`;
    window.hamuxRecall = { done: true, recalled, ms, version: ort.env.versions.web };
    button.disabled = false;
  }

  button.addEventListener("click", recall);
  await recall();
}

main().catch((error) => {
  status.textContent = `Error: ${error}`;
  status.className = "error";
  window.hamuxRecall = { done: true, error: String(error) };
});

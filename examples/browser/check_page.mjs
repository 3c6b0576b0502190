// Opens the page in headless Chromium (playwright-core, with the system's browser),
// waits for its recall, saves a screenshot and prints what the page computed and
// drew, as JSON:
//
//   node check_page.mjs URL SCREENSHOT.png [CHROMIUM]
//
// `recalled`: the pixels the page got from onnxruntime-web; `drawn`: the grey levels
// of each recall canvas, read back from the canvas.
import { chromium } from "playwright-core";

const [url, screenshot, executable] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: executable || process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1180, height: 700 } });
  const console_messages = [];
  page.on("console", (m) => console_messages.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => console_messages.push(`pageerror: ${e}`));
  await page.goto(url);
  await page.waitForFunction(() => window.hamuxRecall && window.hamuxRecall.done, null, {
    timeout: 60000,
  });
  const result = await page.evaluate(() => {
    const drawn = [...document.querySelectorAll("canvas[data-role=recall]")].map((c) => {
      const data = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
      return Array.from({ length: c.width * c.height }, (_, i) => data[4 * i]);
    });
    return { ...window.hamuxRecall, drawn, status: document.getElementById("status").textContent };
  });
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(JSON.stringify({ ...result, console: console_messages }));
} finally {
  await browser.close();
}

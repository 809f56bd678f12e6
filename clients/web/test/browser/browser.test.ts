// The demo page in a real headless Chromium (Debian's /usr/bin/chromium driven by
// playwright-core), served by a real node's web listener: Bob watches Alice, Alice picks
// busy, Bob's page shows it; Alice's page closes, Bob's shows her offline at once (a page
// close sends a WebSocket close: a clean end, no grace). Screenshots are kept in
// target/web-artifacts/.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { mkdir } from "node:fs/promises";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium, type Browser, type Page } from "playwright-core";
import { NodeProcess } from "../support/node-process.js";

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "..", "..");
const artifacts = process.env.WEB_ARTIFACTS_DIR ?? join(repoRoot, "target", "web-artifacts");
const chromiumBin = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";

let node: NodeProcess | undefined;
let browser: Browser | undefined;
after(async () => {
  await browser?.close();
  await node?.stop();
});

/** Polls the page until `selector`'s text is `text`; fails at the deadline with what it saw. */
async function textBecomes(page: Page, selector: string, text: string, timeoutMs: number): Promise<number> {
  const start = Date.now();
  let seen: string | null = null;
  while (Date.now() - start < timeoutMs) {
    seen = await page.locator(selector).first().textContent({ timeout: 1000 }).catch(() => null);
    if (seen?.trim() === text) return Date.now() - start;
    await page.waitForTimeout(25);
  }
  throw new Error(`${selector}: expected "${text}" within ${timeoutMs} ms, last saw ${JSON.stringify(seen)}`);
}

async function joinAs(page: Page, name: string): Promise<void> {
  await page.goto(node!.url + "/", { timeout: 10_000 });
  await page.fill("#name", name, { timeout: 5000 });
  await page.click("#join", { timeout: 5000 });
  await page.waitForSelector('#connection[data-state="connected"]', { timeout: 10_000 });
}

test("two pages: Bob watches Alice, sees her busy, then offline at once when her page closes", async () => {
  assert.ok(existsSync(chromiumBin), `Chromium not found at ${chromiumBin} (apt-get install chromium, or set CHROMIUM_BIN)`);
  await mkdir(artifacts, { recursive: true });
  node = await NodeProcess.start();
  browser = await chromium.launch({ executablePath: chromiumBin, headless: true, timeout: 30_000 });
  const context = await browser.newContext({ viewport: { width: 900, height: 700 } });
  const problems: string[] = [];
  const watchPage = (page: Page, who: string) => {
    page.on("pageerror", (err) => problems.push(`${who}: page error: ${err.message}`));
    page.on("console", (msg) => {
      // The browser's own favicon request may 404; the page asks for nothing else.
      if (msg.location().url.endsWith("/favicon.ico")) return;
      if (msg.type() === "error" || /Content Security Policy/i.test(msg.text())) {
        problems.push(`${who}: console ${msg.type()}: ${msg.text()}`);
      }
    });
  };
  const bob = await context.newPage();
  const alice = await context.newPage();
  watchPage(bob, "bob");
  watchPage(alice, "alice");

  await joinAs(bob, "bob");
  await bob.fill("#watch-name", "alice");
  await bob.click("#watch-add");
  await textBecomes(bob, 'li[data-user="alice"] .status', "offline", 5000);

  await joinAs(alice, "alice");
  await textBecomes(bob, 'li[data-user="alice"] .status', "online", 5000);
  await alice.selectOption("#status", "busy");
  await alice.fill("#status-text", "in a meeting");
  await alice.click("#set-status");
  await textBecomes(bob, 'li[data-user="alice"] .status', "busy", 5000);
  const detail = await bob.textContent('li[data-user="alice"] .detail');
  assert.match(detail ?? "", /in a meeting/);
  await bob.screenshot({ path: join(artifacts, "bob-sees-alice-busy.png") });

  const closedAt = Date.now();
  await alice.close();
  const tookMs = await textBecomes(bob, 'li[data-user="alice"] .status', "offline", 1500);
  const sinceClose = Date.now() - closedAt;
  console.log(`bob's page showed alice offline ${sinceClose} ms after her page closed (poll ${tookMs} ms)`);
  assert.ok(sinceClose < 1500, `offline after ${sinceClose} ms: a page close must not wait out the 3 s grace`);
  await bob.screenshot({ path: join(artifacts, "bob-sees-alice-offline.png") });
  assert.deepEqual(problems, [], "no page errors, no CSP violations");
});

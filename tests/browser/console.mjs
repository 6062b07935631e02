// Drives the web console in headless Chromium for tests/console_browser.rs:
//   node console.mjs <console url> <stream id> <screenshot dir>
// (CHROMIUM names the browser; /usr/bin/chromium by default.) For each of HTTP-FLV and
// WebSocket-FLV: loads the console, waits for the stream to be listed, clicks it, and waits
// for the page's <video> to play past 3 s, checks the relay lists the page's viewer with
// that protocol, and saves a screenshot. Then kicks that viewer with the page's button and
// waits for it to go. Exits non-zero, saying why, on any failure.
import { mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [consoleUrl, streamId, outDir] = process.argv.slice(2);
if (!consoleUrl || !streamId || !outDir) {
  console.error('usage: node console.mjs <console url> <stream id> <screenshot dir>');
  process.exit(2);
}
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
mkdirSync(outDir, { recursive: true });

const profile = mkdtempSync(join(tmpdir(), 'shardcast-chromium-'));
const log = [];
let context;
let failed = false;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    viewport: { width: 1280, height: 900 },
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--autoplay-policy=no-user-gesture-required',
    ],
  });
  const page = context.pages()[0] || (await context.newPage());
  page.on('console', (m) => log.push(`console.${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => log.push(`page error: ${e.message}`));
  page.on('requestfailed', (r) => log.push(`request failed: ${r.url()} ${r.failure()?.errorText}`));

  let lastViewer = null;
  for (const proto of ['http', 'ws']) {
    const step = (what) => console.log(`[${proto}] ${what}`);
    await page.goto(consoleUrl, { waitUntil: 'load' });
    step('console loaded');
    if (proto === 'ws') await page.check('input[name=proto][value=ws]');
    const button = page.locator(`button.play[data-stream="${streamId}"]`);
    await button.waitFor({ state: 'visible', timeout: 20000 });
    step(`stream ${streamId} listed`);
    await button.click();
    const url = await page.locator('#player-url').textContent();
    step(`playing ${url}`);
    const scheme = proto === 'ws' ? 'ws:' : 'http:';
    if (!url.startsWith(scheme)) throw new Error(`the player's URL ${url} is not ${scheme}`);
    try {
      await page.waitForFunction(() => document.querySelector('#video').currentTime > 3,
        null, { timeout: 30000, polling: 200 });
    } catch (e) {
      const why = await page.evaluate(() => {
        const v = document.querySelector('#video');
        return `currentTime ${v.currentTime}, readyState ${v.readyState}, paused ${v.paused}, ` +
          `error ${v.error && v.error.message}, player state "${document.querySelector('#player-state').textContent}"`;
      });
      throw new Error(`the video did not play past 3 s over ${proto}: ${why}`);
    }
    const t = await page.evaluate(() => document.querySelector('#video').currentTime);
    step(`video currentTime ${t.toFixed(2)} s`);
    // The relay sees the page's viewer, with this protocol, and the page lists it.
    const wanted = proto === 'ws' ? 'ws_flv' : 'http_flv';
    const row = page.locator('#clients tbody tr', { hasText: wanted });
    await row.first().waitFor({ state: 'visible', timeout: 10000 });
    lastViewer = await row.first().getAttribute('data-client');
    step(`the clients list shows viewer ${lastViewer} (${wanted})`);
    // A frame or two more, so the sparklines have points.
    await page.waitForTimeout(1600);
    const shot = join(outDir, proto === 'ws' ? 'console-ws.png' : 'console.png');
    await page.screenshot({ path: shot, fullPage: true });
    step(`screenshot ${shot}`);
  }

  // The kick button closes the page's own viewer.
  await page.click(`#clients tr[data-client="${lastViewer}"] button.kick`);
  await page.locator(`#clients tr[data-client="${lastViewer}"]`)
    .waitFor({ state: 'detached', timeout: 10000 });
  console.log(`[kick] viewer ${lastViewer} is gone from the clients list`);
  const errors = log.filter((l) => l.startsWith('page error'));
  if (errors.length) throw new Error(`the page threw: ${errors.join('; ')}`);
  console.log('ok');
} catch (e) {
  failed = true;
  console.error(`FAILED: ${e.message}`);
  console.error('--- browser log (last 200 lines) ---\n' + log.slice(-200).join('\n'));
} finally {
  if (context) await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);

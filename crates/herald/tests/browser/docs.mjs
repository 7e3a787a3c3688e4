// Opens Herald's API reference (/docs) in headless Chromium with the network off: every request
// to anything but the server under test is refused and listed, and DNS resolves nothing else.
// Prints {title, operations, refused} as JSON for tests/it/openapi.rs; with SCREENSHOT set,
// saves a picture of the page there.
import { chromium } from 'playwright-core';

const base = process.env.HERALD_URL;
if (!base) {
  console.error('HERALD_URL is not set');
  process.exit(2);
}
const origin = new URL(base).origin;
const host = new URL(base).hostname;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  // No name resolves but the server's own address: nothing can leave the machine.
  args: [`--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE ${host}`, '--no-proxy-server'],
});
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const refused = [];
  await context.route('**/*', (route) => {
    const url = route.request().url();
    if (url === origin || url.startsWith(`${origin}/`)) {
      return route.continue();
    }
    refused.push(url);
    return route.abort('blockedbyclient');
  });
  const page = await context.newPage();
  await page.goto(`${base}/docs/`, { waitUntil: 'networkidle' });
  await page.waitForSelector('.opblock', { timeout: 30_000 });
  const title = (await page.textContent('.info .title')) ?? '';
  const operations = await page.locator('.opblock').count();
  if (process.env.SCREENSHOT) {
    await page.screenshot({ path: process.env.SCREENSHOT });
  }
  console.log(JSON.stringify({ title, operations, refused }));
} finally {
  await browser.close();
}

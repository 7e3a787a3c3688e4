// Walks the customer portal in headless Chromium as a customer would, from a one-time link
// (its page, then its button): creates a webhook with the event-type picker, sends a test
// event, sees its delivery and the attempt, retries it, rotates the secret, recovers the failed
// deliveries of RECOVER_WEBHOOK (counting them first, then watching the task to its end), makes
// an API key, and visits every page. On each page axe-core checks accessibility and the bytes
// transferred are counted. Every request off the server under test is refused. Prints {pages,
// rotated, attempts, counted, recovered, key, refused, errors} as JSON for
// tests/it/portal_browser.rs; with SCREENSHOTS set (a directory), saves each page there at
// desktop and phone width.
import { chromium } from 'playwright-core';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const base = process.env.HERALD_URL;
const link = process.env.PORTAL_LINK;
const receiver = process.env.RECEIVER_URL;
const failing = process.env.RECOVER_WEBHOOK;
if (!base || !link || !receiver || !failing) {
  console.error('HERALD_URL, PORTAL_LINK, RECEIVER_URL and RECOVER_WEBHOOK must be set');
  process.exit(2);
}
const shots = process.env.SCREENSHOTS;
const origin = new URL(base).origin;
const host = new URL(base).hostname;
const axeSource = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');
const DESKTOP = { width: 1280, height: 900 };
const PHONE = { width: 390, height: 844 };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: [`--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE ${host}`, '--no-proxy-server'],
});
const result = {
  pages: [], rotated: false, attempts: 0, counted: '', recovered: '', key: '', refused: [],
  errors: [],
};
try {
  const context = await browser.newContext({ viewport: DESKTOP });
  await context.route('**/*', (route) => {
    const url = route.request().url();
    if (url === origin || url.startsWith(`${origin}/`)) {
      return route.continue();
    }
    result.refused.push(url);
    return route.abort('blockedbyclient');
  });
  const page = await context.newPage();
  // What the page breaks (a CSP violation, a script error) shows in the console.
  page.on('console', (m) => { if (m.type() === 'error') result.errors.push(m.text()); });
  page.on('pageerror', (e) => result.errors.push(String(e)));
  // The bytes of every response since the navigation began (headers and body as sent).
  let sizes = [];
  page.on('requestfinished', (request) => {
    sizes.push(request.sizes()
      .then((s) => s.responseBodySize + s.responseHeadersSize)
      .catch(() => 0));
  });

  // Each navigation counts from zero; `act` makes it (a goto, a click that submits).
  async function visit(name, act) {
    sizes = [];
    await act();
    await page.waitForLoadState('networkidle');
    const transferred = (await Promise.all(sizes)).reduce((a, b) => a + b, 0);
    await page.evaluate(axeSource);
    const axe = await page.evaluate(async () => {
      const r = await window.axe.run(document, { resultTypes: ['violations'] });
      return r.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.length, help: v.help }));
    });
    const entry = { name, path: new URL(page.url()).pathname, bytes: transferred, violations: axe };
    result.pages.push(entry);
    if (shots) {
      await page.screenshot({ path: `${shots}/${name}-desktop.png` });
      await page.setViewportSize(PHONE);
      await page.screenshot({ path: `${shots}/${name}-phone.png` });
      await page.setViewportSize(DESKTOP);
    }
    return entry;
  }
  const goto = (path) => () => page.goto(path.startsWith('http') ? path : `${base}${path}`);
  const click = (selector) => () => page.click(selector);

  // The link's page uses nothing up; its button opens the session.
  await visit('open', goto(link));
  await visit('home', click('button:has-text("Open the portal")'));
  await visit('webhook-new', click('a:has-text("New webhook")'));
  await page.fill('#url', receiver);
  await page.check('input[name="events"][value="tts.completed"]');
  await visit('webhook', click('button:has-text("Create webhook")'));
  const webhookPath = new URL(page.url()).pathname;
  await page.selectOption('#test-type', 'tts.completed');
  await page.click('button:has-text("Send test event")');
  // The attempt shows once the receiver has answered: reload until it does.
  const deadline = Date.now() + 20_000;
  while (!(await page.locator('text=HTTP 200').count()) && Date.now() < deadline) {
    await page.waitForTimeout(200);
    await page.reload();
  }
  const deliveryPath = new URL(page.url()).pathname;
  await visit('delivery', goto(deliveryPath));
  await page.click('button:has-text("Retry now")');
  const retried = Date.now() + 20_000;
  while ((await page.locator('td:has-text("HTTP 200")').count()) < 2 && Date.now() < retried) {
    await page.waitForTimeout(200);
    await page.reload();
  }
  result.attempts = await page.locator('td:has-text("HTTP 200")').count();

  await visit('secret', goto(`${webhookPath}/secret`));
  const before = await page.inputValue('#secret');
  await page.selectOption('#grace', '1h');
  await page.click('button:has-text("Rotate secret")');
  await page.waitForLoadState('load');
  result.rotated = (await page.inputValue('#secret')) !== before && (await page.inputValue('#previous')) === before;

  // Recover the failed deliveries: count first, then start the task and refresh its page
  // until it is done.
  await visit('recover', goto(`/portal/webhooks/${failing}/recover`));
  await page.click('button:has-text("Count them first")');
  await page.waitForLoadState('load');
  result.counted = (await page.locator('p.notice').textContent()) || '';
  await visit('task', click('button:has-text("Recover")'));
  const recovering = Date.now() + 20_000;
  while (!(await page.locator('.badge:has-text("succeeded")').count()) && Date.now() < recovering) {
    await page.waitForTimeout(200);
    await page.click('a:has-text("Refresh")');
    await page.waitForLoadState('load');
  }
  result.recovered = (await page.locator('dl.facts').textContent()) || '';

  await visit('deliveries', goto('/portal/deliveries'));
  await visit('health', goto(`${webhookPath}/health`));
  await visit('jobs', goto('/portal/jobs'));
  const job = page.locator('td a[href^="/portal/jobs/"]').first();
  if (await job.count()) {
    await visit('job', click('td a[href^="/portal/jobs/"]'));
  }
  await visit('callback', goto('/portal/callback'));
  await goto('/portal/keys')();
  await page.fill('#name', 'ci');
  await visit('keys', click('button:has-text("Make a key")'));
  result.key = (await page.inputValue('#new-key')).slice(0, 3);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));

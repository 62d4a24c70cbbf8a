// Browser check of icebox's CORS and WebSocket Origin check, driven by
// cmd/icebox/cors_browser_test.go: Debian's Chromium (playwright-core)
// loads a blank page on each origin given and, from it, fetches
// /_matrix/client/v3/voip/turnServer with the token in an Authorization
// header (a preflighted request) and opens /ws with the token as the
// access_token parameter.
//
//   node cors.js ICEBOX_URL PAGE_URL...
//
// The token comes in the environment (CORS_E2E_TOKEN). The result is one
// JSON line on stdout, by page URL: {fetch: status or "error: …", ws: "open"
// or "error"}; the Go test makes the assertions.
'use strict';

const { chromium } = require('playwright-core');

const [icebox, ...pages] = process.argv.slice(2);
const token = process.env.CORS_E2E_TOKEN || '';
const ARGS = ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync'];

async function main() {
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args: ARGS });
  const out = {};
  try {
    for (const url of pages) {
      const page = await browser.newPage();
      await page.goto(url);
      out[url] = await page.evaluate(async ({ icebox, token }) => {
        const r = {};
        try {
          const resp = await fetch(icebox + '/_matrix/client/v3/voip/turnServer', {
            headers: { Authorization: 'Bearer ' + token },
          });
          r.fetch = resp.status;
          r.uris = (await resp.json()).uris;
        } catch (e) {
          r.fetch = 'error: ' + e.message;
        }
        r.ws = await new Promise((resolve) => {
          const ws = new WebSocket(icebox.replace(/^http/, 'ws') + '/ws?access_token=' + encodeURIComponent(token));
          const timer = setTimeout(() => resolve('timeout'), 10000);
          ws.onopen = () => { clearTimeout(timer); ws.close(); resolve('open'); };
          ws.onerror = () => { clearTimeout(timer); resolve('error'); };
        });
        return r;
      }, { icebox, token });
      await page.close();
    }
  } finally {
    await browser.close();
  }
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch((e) => { process.stdout.write(JSON.stringify({ error: String(e && e.stack || e) }) + '\n'); process.exit(1); });

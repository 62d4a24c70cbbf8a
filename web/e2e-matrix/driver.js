// Drives headless Chromium for cmd/icebox/jssdk_*_test.go: one browser,
// pages opened and called on request. It reads one JSON command per line on
// stdin and answers each with one JSON line on stdout:
//
//   {"id":1,"op":"open","page":"element","url":"http://127.0.0.1:PORT/element.html","global":"harness"}
//     (optional "init": a script run in every frame before its own)
//   {"id":2,"op":"call","page":"element","fn":"harness.placeCall","args":["!room:localhost","voice"]}
//   {"id":3,"op":"console","page":"element","since":0}
//   → {"id":N,"ok":true,"result":…} or {"id":N,"ok":false,"error":"…"}
//
// Each page gets its own browser context (its own storage, like two
// machines). Chromium runs with fake camera, microphone and screen, and the
// flags of ../shared/reference/turn.md ("Test beds"). stdin closing ends it.
'use strict';

const readline = require('readline');
const { chromium } = require('playwright-core');

const ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--autoplay-policy=no-user-gesture-required',
  // getUserMedia without a prompt, from Chromium's fake devices (a beep and
  // a test pattern); getDisplayMedia picks the screen by itself.
  '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
  '--auto-select-desktop-capture-source=Entire screen', '--auto-accept-this-tab-capture',
  '--enable-usermedia-screen-capturing'];

let browser;
const pages = new Map(); // name → {page, console: [{t, type, text}]}

async function open(name, url, global, init) {
  const ctx = await browser.newContext({ viewport: { width: 800, height: 600 } });
  await ctx.grantPermissions(['camera', 'microphone']);
  // init runs in every frame of the context before the frame's own
  // scripts (rtc_ec_test.go counts the peer connections Element Call makes).
  if (init) await ctx.addInitScript({ content: init });
  const page = await ctx.newPage();
  const entry = { page, console: [] };
  const keep = (type, text) => {
    entry.console.push({ t: Date.now(), type, text: text.slice(0, 2000) });
    if (entry.console.length > 5000) entry.console.shift();
  };
  page.on('console', (m) => keep(m.type(), m.text()));
  page.on('pageerror', (e) => keep('pageerror', e.message));
  // Failed requests of every frame, as type "http" (path only: a query may
  // carry a token).
  const where = (u) => { try { const x = new URL(u); return x.origin + x.pathname; } catch { return '?'; } };
  page.on('response', (r) => { if (r.status() >= 400) keep('http', `${r.status()} ${r.request().method()} ${where(r.url())}`); });
  page.on('requestfailed', (r) => keep('http', `failed ${r.method()} ${where(r.url())}: ${r.failure()?.errorText || ''}`));
  pages.set(name, entry);
  await page.goto(url);
  // The page's script is loaded when its global (window.harness or
  // window.icebox) says it is ready.
  await page.waitForFunction((o) => window[o] && window[o].ready, global, { timeout: 30000 });
  return { url };
}

function page(name) {
  const e = pages.get(name);
  if (!e) throw new Error('no page ' + name);
  return e;
}

async function call(name, fn, args) {
  return page(name).page.evaluate(async ([fn, args]) => {
    const [obj, method] = fn.split('.');
    const r = await window[obj][method](...args);
    return r === undefined ? null : r;
  }, [fn, args || []]);
}

async function handle(cmd) {
  switch (cmd.op) {
    case 'open': return open(cmd.page, cmd.url, cmd.global, cmd.init);
    case 'call': return call(cmd.page, cmd.fn, cmd.args);
    case 'console': return page(cmd.page).console.filter((c) => c.t >= (cmd.since || 0));
    case 'closePage': {
      const e = page(cmd.page);
      pages.delete(cmd.page);
      await e.page.context().close();
      return null;
    }
    default: throw new Error('unknown op ' + cmd.op);
  }
}

async function main() {
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args: ARGS });
  process.stdout.write(JSON.stringify({ id: 0, ok: true, result: { version: browser.version() } }) + '\n');
  const rl = readline.createInterface({ input: process.stdin });
  for await (const line of rl) {
    if (!line.trim()) continue;
    let cmd;
    try { cmd = JSON.parse(line); } catch (e) { continue; }
    // Commands run concurrently (two pages may wait at once); each answer
    // carries its id.
    handle(cmd).then(
      (result) => process.stdout.write(JSON.stringify({ id: cmd.id, ok: true, result }) + '\n'),
      (e) => process.stdout.write(JSON.stringify({ id: cmd.id, ok: false, error: String(e && e.message || e) }) + '\n'));
  }
  await browser.close();
}

main().catch(async (e) => {
  process.stdout.write(JSON.stringify({ id: 0, ok: false, error: String(e && e.stack || e) }) + '\n');
  if (browser) await browser.close().catch(() => {});
  process.exit(1);
});

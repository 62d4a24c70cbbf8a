// Browser tests of icebox's web UI, driven by cmd/icebox/ui_test.go inside
// a network namespace: playwright-core drives Debian's Chromium
// (/usr/bin/chromium; nothing downloaded). One scenario per run:
//
//   node ui.js ice-test BASE_URL OUT_DIR
//   node ui.js call     BASE_URL OUT_DIR CONVERSATION_ID
//
// Tokens come in the environment (UI_E2E_TOKENS, a JSON object: alice, bob,
// admin, wrong), not on the command line. The result is one JSON line on
// stdout; the Go test makes the assertions. Screenshots go to OUT_DIR: each
// page as on a desktop (NAME.png), on a phone 390 px wide (NAME-phone.png)
// and in dark mode (NAME-dark.png).
'use strict';

const path = require('path');
const { chromium } = require('playwright-core');

const [scenario, base, outDir, conversation] = process.argv.slice(2);
const tokens = JSON.parse(process.env.UI_E2E_TOKENS || '{}');
const DEADLINE_MS = Number(process.env.UI_E2E_DEADLINE_MS || 90000);

// The flags of ../shared/reference/turn.md ("Test beds").
const ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--autoplay-policy=no-user-gesture-required'];

let browser;
const consoleErrors = [];

function watch(page, name) {
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(name + ': ' + m.text()); });
  page.on('pageerror', (e) => consoleErrors.push(name + ': uncaught ' + e.message));
}

const PHONE = { width: 390, height: 844 };

// layout measures what the phone and dark-mode checks judge: the
// document's width against the viewport's (a wider document scrolls
// sideways), the elements sticking out on the right (for the error
// message), the body's computed background and which scheme the page saw.
function layout(page) {
  return page.evaluate(() => ({
    scrollWidth: document.documentElement.scrollWidth,
    width: window.innerWidth,
    bg: getComputedStyle(document.body).backgroundColor,
    dark: window.matchMedia('(prefers-color-scheme: dark)').matches,
    wide: Array.from(document.querySelectorAll('body *'))
      .filter((e) => e.getBoundingClientRect().right > window.innerWidth + 0.5)
      .slice(0, 8).map((e) => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + (e.className && typeof e.className === 'string' ? '.' + e.className.replace(/ /g, '.') : '')),
  }));
}

// views measures page as it is, then on a phone (PHONE, light) and in
// the dark (its own size), screenshotting each as NAME[-phone|-dark].png;
// settle(page) waits for the page to redraw after a change. The page ends
// as it started (size and scheme).
async function views(page, name, out, settle) {
  const size = page.viewportSize();
  await page.screenshot({ path: path.join(outDir, name + '.png'), fullPage: true });
  out[name] = await layout(page);
  await page.setViewportSize(PHONE);
  if (settle) await settle(page);
  out[name + '-phone'] = await layout(page);
  await page.screenshot({ path: path.join(outDir, name + '-phone.png'), fullPage: true });
  await page.setViewportSize(size);
  await page.emulateMedia({ colorScheme: 'dark' });
  if (settle) await settle(page);
  out[name + '-dark'] = await layout(page);
  await page.screenshot({ path: path.join(outDir, name + '-dark.png'), fullPage: true });
  await page.emulateMedia({ colorScheme: 'light' });
  if (settle) await settle(page);
}

// nextPoll waits for the status page's next refresh (its chart is drawn
// for the size it has then).
async function nextPoll(page) {
  const n = await page.evaluate(() => Number(document.body.dataset.polls || 0));
  await page.waitForFunction((n) => Number(document.body.dataset.polls || 0) > n, n, { timeout: 10000 });
}

async function signIn(page, token) {
  await page.fill('#token', token);
  await page.click('#signin-form button[type=submit]');
}

async function iceTest() {
  const out = {};
  const ctx = await browser.newContext({ viewport: { width: 1100, height: 900 } });
  const page = await ctx.newPage();
  watch(page, 'ice-test');
  await page.goto(base + '/ui/ice-test');
  await signIn(page, tokens.alice);
  await page.waitForSelector('#verdict[data-verdict=pass], #verdict[data-verdict=fail]', { timeout: 45000 });
  out.good = await page.evaluate(() => ({
    verdict: document.querySelector('#verdict').dataset.verdict,
    title: document.querySelector('#verdict-title').textContent,
    detail: document.querySelector('#verdict-detail').textContent,
    result: window.iceTestResult,
    candidateRows: document.querySelectorAll('#candidates tbody tr').length,
    relayRows: document.querySelectorAll('#candidates tbody tr[data-type=relay]').length,
  }));
  out.layout = {};
  await views(page, 'ice-test', out.layout);
  await page.goto(base + '/ui/');
  await views(page, 'index', out.layout);
  await ctx.close();

  // The sign-in form and a refused token on a phone in the dark.
  const bad = await browser.newContext({ viewport: PHONE, colorScheme: 'dark' });
  const p2 = await bad.newPage();
  watch(p2, 'ice-test-bad-token');
  await p2.goto(base + '/ui/ice-test');
  await signIn(p2, tokens.wrong);
  await p2.waitForSelector('#verdict[data-verdict=fail]', { timeout: 15000 });
  out.bad = await p2.evaluate(() => ({
    verdict: document.querySelector('#verdict').dataset.verdict,
    cause: document.querySelector('#verdict').dataset.cause,
    title: document.querySelector('#verdict-title').textContent,
    detail: document.querySelector('#verdict-detail').textContent,
  }));
  out.layout['ice-test-bad-token-phone-dark'] = await layout(p2);
  await bad.close();
  return out;
}

// poll evaluates fn in page until it returns a truthy value or timeoutMs
// passes (then it throws with what it saw last).
async function poll(page, fn, arg, timeoutMs, what) {
  const end = Date.now() + timeoutMs;
  let last;
  while (Date.now() < end) {
    last = await page.evaluate(fn, arg);
    if (last && last.ok) return last;
    await page.waitForTimeout(250);
  }
  throw new Error(what + ' not seen within ' + timeoutMs + ' ms; last: ' + JSON.stringify(last));
}

async function callPage(name, token) {
  const ctx = await browser.newContext({ viewport: { width: 1100, height: 1000 } });
  const page = await ctx.newPage();
  watch(page, name);
  await page.goto(base + '/ui/call');
  await signIn(page, token);
  await page.waitForSelector('#ws-state[data-state=open]', { timeout: 10000 });
  // The conversation is picked from the user's list (GET /conversations).
  await page.waitForSelector(`#conversation-list option[value="${conversation}"]`, { state: 'attached', timeout: 10000 });
  await page.selectOption('#conversation-list', conversation);
  await page.selectOption('#media', 'generated');
  return page;
}

const state = (page) => page.evaluate(() => window.iceboxDemo.state());

// callDemo: alice calls bob through the demo page while an admin watches
// the status page; both sides get RTP over a relay pair; alice hangs up.
async function callDemo() {
  const out = {};
  const t0 = Date.now();
  const admin = await (await browser.newContext({ viewport: { width: 1100, height: 1100 } })).newPage();
  watch(admin, 'status');
  await admin.goto(base + '/ui/status');
  await signIn(admin, tokens.admin);
  await admin.waitForSelector('#dashboard:not(.hidden)', { timeout: 10000 });

  const alice = await callPage('alice', tokens.alice);
  const bob = await callPage('bob', tokens.bob);
  out.signedIn = { alice: await alice.textContent('#who'), bob: await bob.textContent('#who') };

  await alice.click('#call-button');
  await bob.waitForSelector('#incoming:not(.hidden)', { timeout: 10000 });
  out.bobRang = await state(bob);
  out.aliceRinging = await state(alice);
  out.callId = await alice.evaluate(() => window.iceboxDemo.callId());
  await bob.click('#answer-button');

  const media = (p) => poll(p, async () => {
    const s = await window.iceboxDemo.stats();
    return { ok: window.iceboxDemo.state() === 'connected' && s.videoIn > 0 && s.local !== null, state: window.iceboxDemo.state(), stats: s };
  }, null, 20000, 'inbound RTP over a selected pair');
  const [a, b] = await Promise.all([media(alice), media(bob)]);
  out.connectMs = Date.now() - t0;
  out.aliceStats = a.stats;
  out.bobStats = b.stats;

  // The status page: the call's allocations, with counters that move.
  const allocs = (p, id) => p.evaluate((id) => Array.from(document.querySelectorAll('#allocations tbody tr[data-call-id]'))
    .filter((r) => r.dataset.callId === id)
    .map((r) => ({ user: r.dataset.user, to: Number(r.dataset.bytesToPeer), from: Number(r.dataset.bytesFromPeer) })), id);
  await poll(admin, async (id) => {
    const rows = Array.from(document.querySelectorAll('#allocations tbody tr[data-call-id]')).filter((r) => r.dataset.callId === id);
    // Both sides' allocations (Chromium may make more than one per side,
    // and one side's can show up a refresh before the other's).
    const users = new Set(rows.map((r) => r.dataset.user));
    return { ok: users.size >= 2, rows: rows.length, users: users.size };
  }, out.callId, 10000, "both sides' allocations of the call on the status page");
  out.statusAllocationsFirst = await allocs(admin, out.callId);
  await poll(admin, async (arg) => {
    const rows = Array.from(document.querySelectorAll('#allocations tbody tr[data-call-id]')).filter((r) => r.dataset.callId === arg.id);
    const total = rows.reduce((n, r) => n + Number(r.dataset.bytesToPeer) + Number(r.dataset.bytesFromPeer), 0);
    return { ok: total > arg.before && Number(document.querySelector('#chart').dataset.points || 0) >= 4, total };
  }, { id: out.callId, before: out.statusAllocationsFirst.reduce((n, r) => n + r.to + r.from, 0) }, 15000, 'allocation counters moving and 3 chart points');
  out.statusAllocationsLater = await allocs(admin, out.callId);
  out.statusCalls = await admin.evaluate(() => ({
    answered: document.querySelector('#n-answered').textContent,
    ringing: document.querySelector('#n-ringing').textContent,
    rows: Array.from(document.querySelectorAll('#calls tbody tr[data-call-id]')).map((r) => ({ id: r.dataset.callId, status: r.dataset.status })),
    chartPoints: Number(document.querySelector('#chart').dataset.points || 0),
    keyring: Array.from(document.querySelectorAll('#keyring tbody tr')).map((r) => r.dataset.kid),
    // With matrixrtc.livekit.turn on: the SFU TURN kids ({kid, role:
    // current|accepted}); in mode managed the LiveKit panel's data.
    sfu: Array.from(document.querySelectorAll('#keyring tbody tr[data-sfu]')).map((r) => ({ kid: r.dataset.kid, role: r.dataset.sfu })),
    livekit: document.querySelector('#livekit') ? { ...document.querySelector('#livekit').dataset } : null,
    matrix: document.querySelector('#matrix').dataset.matrix,
  }));
  // Let a few more stats ticks paint before the screenshots.
  await alice.waitForTimeout(1200);
  out.layout = {};
  await views(admin, 'status', out.layout, nextPoll);
  await views(alice, 'call', out.layout);
  // The conversation lists: each user's conversations (GET
  // /conversations), with who else is in them and their last call; the
  // invitee choices of the picked one.
  const listOf = (p) => p.evaluate(() => ({
    options: Array.from(document.querySelectorAll('#conversation-list option')).filter((o) => o.value).map((o) => ({ id: o.value, text: o.textContent })),
    picked: document.querySelector('#conversation-list').value,
    invitees: Array.from(document.querySelectorAll('#invitee option')).filter((o) => o.value).map((o) => o.value),
  }));
  await alice.click('#refresh-conversations'); // the last call is now answered
  await poll(alice, (id) => {
    const o = document.querySelector(`#conversation-list option[value="${id}"]`);
    return { ok: !!o && /last call: answered/.test(o.textContent), text: o ? o.textContent : null };
  }, conversation, 10000, "alice's list read again, showing the answered call");
  out.conversationList = await listOf(alice);
  out.bobConversationList = await listOf(bob);
  out.chartWindow = await admin.evaluate(() => ({
    minutes: Number(document.querySelector('#chart').dataset.windowMinutes || 0),
    heading: document.querySelector('#window').closest('h2').textContent,
  }));

  // Kill one of the call's allocations from the status page: Kill asks
  // for confirmation (Cancel keeps it), Confirm kill closes it and its row
  // goes.
  const victim = await admin.evaluate((id) => {
    const r = Array.from(document.querySelectorAll('#allocations tbody tr[data-call-id]')).find((x) => x.dataset.callId === id && x.dataset.id);
    return r ? r.dataset.id : '';
  }, out.callId);
  if (!victim) throw new Error('no allocation ID on the status page');
  const row = `#allocations tbody tr[data-id="${victim}"]`;
  await admin.locator(row + ' button.kill').click();
  await admin.locator(row + ' button.cancel-kill').click();
  await admin.locator(row + ' button.kill').waitFor({ timeout: 5000 });
  await admin.locator(row + ' button.kill').click();
  await admin.locator(row + ' button.confirm-kill').click();
  await poll(admin, (sel) => ({ ok: document.querySelector(sel) === null, error: document.querySelector('#kill-error').textContent }),
    row, 10000, 'the killed allocation gone from the status page');
  out.statusKilled = victim;

  await alice.click('#hangup-button');
  const ended = (p) => poll(p, () => ({ ok: window.iceboxDemo.state() === 'ended', state: window.iceboxDemo.state(),
    text: document.querySelector('#call-state').textContent }), null, 10000, 'the call ended');
  const [ea, eb] = await Promise.all([ended(alice), ended(bob)]);
  out.ended = { alice: ea.text, bob: eb.text };
  out.bobLog = await bob.evaluate(() => Array.from(document.querySelectorAll('#log li')).map((li) => li.textContent).reverse());
  out.aliceLog = await alice.evaluate(() => Array.from(document.querySelectorAll('#log li')).map((li) => li.textContent).reverse());
  return out;
}

async function main() {
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args: ARGS });
  process.stderr.write('browser ' + browser.version() + '\n');
  switch (scenario) {
    case 'ice-test': return iceTest();
    case 'call': return callDemo();
    default: throw new Error('unknown scenario ' + scenario);
  }
}

function finish(result) {
  // The console errors of the pages the browser writes for itself (a
  // refused API call shows as "Failed to load resource") are expected in
  // the bad-token run; the Go test judges them.
  process.stdout.write(JSON.stringify({ scenario, ...result, consoleErrors }) + '\n');
}

const deadline = setTimeout(async () => {
  finish({ ok: false, error: 'scenario did not finish within ' + DEADLINE_MS + ' ms' });
  if (browser) await browser.close().catch(() => {});
  process.exit(2);
}, DEADLINE_MS);

main().then(async (r) => {
  finish({ ok: true, ...r });
}, async (err) => {
  finish({ ok: false, error: String(err && err.stack || err) });
}).finally(async () => {
  clearTimeout(deadline);
  if (browser) await browser.close().catch(() => {});
});

// Bundles the pages of the Matrix browser harness into dist/: esbuild turns
// src/element.js (matrix-js-sdk, the library inside Element Web) into one ES
// module, and the Rust crypto's wasm is copied to where that module asks for
// it (new URL("./pkg/matrix_sdk_crypto_wasm_bg.wasm", import.meta.url)).
// src/rtc.js (matrix-js-sdk's MatrixRTC session and livekit-client, what
// Element Call runs) becomes a second module; livekit-client's E2EE worker
// is copied beside it. The HTML pages and the icebox peer (plain
// JavaScript) are copied as they are.
//
// dist/.stamp holds the hash of package-lock.json and of the sources: a
// build whose stamp matches does nothing (scripts/install-test-deps.sh runs
// this on every `make test`), and the Go tests refuse a bundle whose stamp is
// stale. `node build.js --stamp` prints the hash and builds nothing.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const path = require('path');

const root = __dirname;
const dist = path.join(root, 'dist');
const sources = ['package-lock.json', 'build.js', 'src/element.js', 'src/element.html', 'src/icebox.js', 'src/icebox.html', 'src/rtpstats.js', 'src/rtc.js', 'src/rtc.html', 'src/rtc-ec.js', 'src/rtc-ec.html'];

function stamp() {
  const h = crypto.createHash('sha256');
  for (const f of sources) {
    h.update(f + '\0');
    h.update(fs.readFileSync(path.join(root, f)));
    h.update('\0');
  }
  return h.digest('hex');
}

async function main() {
  const want = stamp();
  if (process.argv.includes('--stamp')) {
    process.stdout.write(want + '\n');
    return;
  }
  const stampFile = path.join(dist, '.stamp');
  if (!process.argv.includes('--force') && fs.existsSync(stampFile) && fs.readFileSync(stampFile, 'utf8').trim() === want) {
    return;
  }
  const esbuild = require('esbuild');
  fs.rmSync(dist, { recursive: true, force: true });
  fs.mkdirSync(path.join(dist, 'pkg'), { recursive: true });
  const t0 = Date.now();
  await esbuild.build({
    entryPoints: ['element.js', 'rtc.js', 'rtc-ec.js'].map((f) => path.join(root, 'src', f)),
    outdir: dist,
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'chrome120',
    sourcemap: false,
    minify: false,
    logLevel: 'warning',
    // The SDK's optional Node-only imports are never reached in a browser.
    define: { 'process.env.NODE_ENV': '"production"', global: 'globalThis' },
  });
  // The package's exports map hides pkg/ from require.resolve; npm ci
  // hoists it to the top of node_modules.
  const wasm = path.join(root, 'node_modules', '@matrix-org', 'matrix-sdk-crypto-wasm', 'pkg', 'matrix_sdk_crypto_wasm_bg.wasm');
  fs.copyFileSync(wasm, path.join(dist, 'pkg', 'matrix_sdk_crypto_wasm_bg.wasm'));
  for (const f of ['element.html', 'icebox.js', 'icebox.html', 'rtpstats.js', 'rtc.html', 'rtc-ec.html']) {
    fs.copyFileSync(path.join(root, 'src', f), path.join(dist, f));
  }
  // The worker is a self-contained module; rtc.js starts it by this name.
  fs.copyFileSync(path.join(root, 'node_modules', 'livekit-client', 'dist', 'livekit-client.e2ee.worker.mjs'),
    path.join(dist, 'livekit-e2ee-worker.mjs'));
  // Element Call's embedded build (a static site) under dist/ec/, linked
  // rather than copied (44 MB); rtc-ec.html loads it as its widget.
  fs.symlinkSync(path.join(root, 'node_modules', '@element-hq', 'element-call-embedded', 'dist'), path.join(dist, 'ec'));
  fs.writeFileSync(stampFile, want + '\n');
  process.stderr.write(`e2e-matrix: bundled matrix-js-sdk and livekit-client into dist/ in ${Date.now() - t0} ms\n`);
}

main().catch((e) => {
  process.stderr.write('e2e-matrix build: ' + (e.stack || e) + '\n');
  process.exit(1);
});

// jssdk-rtckeys.mjs is a Matrix device running matrix-js-sdk 43's own
// MatrixRTC to-device key transport (ToDeviceKeyTransport, what Element
// Call's MatrixRTCSession sends and receives media keys with) over its Rust
// crypto, in node, for icebox's key exchange test (rtckeys_jssdk_test.go).
//
//   node jssdk-rtckeys.mjs MATRIX_JS_SDK_DIR
//
// stdin, one JSON object a line: first the login {baseUrl, userId, deviceId,
// accessToken, roomId}, then commands {cmd: "send", key (base64), index,
// to: [{userId, deviceId}]}. stdout, one JSON object a line: {event:
// "ready"} once the client synced and uploaded its keys, {event: "sent"} or
// {event: "error", message} per command, {event: "received", userId,
// deviceId, memberId, key, index} per key the transport took. The SDK's
// logging goes to stderr.
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const dir = process.argv[2];
if (!dir) {
  console.error('usage: node jssdk-rtckeys.mjs MATRIX_JS_SDK_DIR');
  process.exit(2);
}
const emit = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const toStderr = (...a) => process.stderr.write(a.map(String).join(' ') + '\n');
console.log = console.info = console.debug = console.warn = console.trace = toStderr;

// matrix-js-sdk 43 targets browsers and node 22+; node 20 lacks this.
if (!Promise.withResolvers) {
  Promise.withResolvers = function withResolvers() {
    let resolve, reject;
    const promise = new this((res, rej) => { resolve = res; reject = rej; });
    return { promise, resolve, reject };
  };
}

const lib = (p) => import(pathToFileURL(join(dir, 'lib', p)).href);
const sdk = await lib('index.js');
const { ToDeviceKeyTransport } = await lib('matrixrtc/ToDeviceKeyTransport.js');
const { KeyTransportEvents } = await lib('matrixrtc/IKeyTransport.js');

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const first = await lines.next();
const login = JSON.parse(first.value);

const client = sdk.createClient({
  baseUrl: login.baseUrl, userId: login.userId, deviceId: login.deviceId, accessToken: login.accessToken,
});
await client.initRustCrypto({ useIndexedDB: false });
const synced = new Promise((resolve) => {
  client.on(sdk.ClientEvent.Sync, (state) => { if (state === 'PREPARED' || state === 'SYNCING') resolve(); });
});
await client.startClient({ initialSyncLimit: 1 });
await synced;
// The device's keys are on the homeserver once the crypto's outgoing
// requests ran: ask for them until they are there.
for (let i = 0; ; i++) {
  const r = await client.downloadKeysForUsers([login.userId]);
  if (r.device_keys?.[login.userId]?.[login.deviceId]) break;
  if (i > 200) throw new Error('own device keys never uploaded');
  await new Promise((res) => setTimeout(res, 50));
}

const statistics = {
  counters: { roomEventEncryptionKeysSent: 0, roomEventEncryptionKeysReceived: 0 },
  totals: { roomEventEncryptionKeysReceivedTotalAge: 0 },
};
const membership = { userId: login.userId, deviceId: login.deviceId, memberId: `${login.userId}:${login.deviceId}` };
const transport = new ToDeviceKeyTransport(membership, login.roomId, client, statistics);
transport.on(KeyTransportEvents.ReceivedKeys, (m, key, index) => {
  emit({ event: 'received', userId: m.userId, deviceId: m.deviceId, memberId: m.memberId, key, index });
});
transport.start();
emit({ event: 'ready' });

for (;;) {
  const line = await lines.next();
  if (line.done) break;
  const c = JSON.parse(line.value);
  try {
    if (c.cmd !== 'send') throw new Error(`unknown command ${c.cmd}`);
    await transport.sendKey(c.key, c.index, c.to.map((d) => ({ ...d, membershipTs: 0 })));
    emit({ event: 'sent' });
  } catch (e) {
    emit({ event: 'error', message: String(e?.message ?? e) });
  }
}
transport.stop();
client.stopClient();
process.exit(0);

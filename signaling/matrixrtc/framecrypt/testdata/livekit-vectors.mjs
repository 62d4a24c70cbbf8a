// livekit-vectors.mjs runs livekit-client's own E2EE worker bundle
// (dist/livekit-client.e2ee.worker.mjs, the code the browser runs) in node,
// driving it through its worker message protocol with fake encoded frames
// (data, timestamp, type for video, getMetadata()), so framecrypt's test
// vectors come from livekit-client and not from the Go code under test.
//
//   node livekit-vectors.mjs LIVEKIT_CLIENT_DIR gen            > vectors.json
//   node livekit-vectors.mjs LIVEKIT_CLIENT_DIR decrypt < in.json > out.json
//
// decrypt reads {keys:[{participant,index,key}], frames:[{participant,kind,
// type,mime,data}]} (hex) and answers {frames:[{data|null}], errors:[...]}:
// null where livekit-client dropped the frame.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const [dir, mode] = process.argv.slice(2);
if (!dir || !['gen', 'decrypt'].includes(mode)) {
  console.error('usage: node livekit-vectors.mjs LIVEKIT_CLIENT_DIR gen|decrypt');
  process.exit(2);
}
const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));

// The send counter's random start (Math.floor(Math.random() * 0xffff)) is
// fixed so the IV's third word is reproducible: 0.5 → 32767.
const RANDOM = 0.5;
Math.random = () => RANDOM;

// The worker's globals: it assigns onmessage and calls postMessage, tests
// self.RTCTransformEvent and names RTCEncodedAudioFrame in a log line.
const posted = [];
globalThis.self = globalThis;
globalThis.onmessage = null;
globalThis.postMessage = (m) => posted.push(m);
globalThis.RTCEncodedAudioFrame = class {};
const quiet = console.log;
if (!process.env.LK_DEBUG) console.log = console.info = console.debug = () => {};
await import(pathToFileURL(join(dir, 'dist', 'livekit-client.e2ee.worker.mjs')).href);

const hex = (b) => Buffer.from(b instanceof ArrayBuffer ? new Uint8Array(b) : b).toString('hex');
const unhex = (s) => new Uint8Array(Buffer.from(s, 'hex'));

// Messages run one after another on the worker's queue; a message that
// posts an answer ('enable' echoes itself) marks the ones before as done.
let seq = 0;
async function send(kind, data) {
  globalThis.onmessage({ data: { kind, data } });
  const id = `sync-${seq++}`;
  globalThis.onmessage({ data: { kind: 'enable', data: { enabled: true, participantIdentity: id } } });
  for (let i = 0; i < 1000; i++) {
    if (posted.some((m) => m.kind === 'enable' && m.data.participantIdentity === id)) return;
    await new Promise((r) => setTimeout(r, 1));
  }
  throw new Error(`worker did not process ${kind}`);
}

// Element Call's MatrixKeyProvider: BaseKeyProvider({ratchetWindowSize: 10,
// keyringSize: 256}) over livekit's defaults.
const keyProviderOptions = {
  sharedKey: false,
  ratchetSalt: 'LKFrameEncryptionKey',
  ratchetWindowSize: 10,
  failureTolerance: 10,
  keyringSize: 256,
  keySize: 128,
};
await send('init', { keyProviderOptions, loglevel: process.env.LK_DEBUG ? 'debug' : 'silent' });

// setKey imports the raw key as MatrixKeyProvider does (HKDF material).
async function setKey(participant, index, keyHex) {
  const material = await crypto.subtle.importKey('raw', unhex(keyHex), 'HKDF', false, ['deriveBits', 'deriveKey']);
  await send('enable', { enabled: true, participantIdentity: participant });
  await send('setKey', { participantIdentity: participant, isPublisher: false, key: material, keyIndex: index, updateCurrentKeyIndex: true });
}

class VideoFrame {
  constructor(data, type, timestamp, ssrc, mimeType) {
    this.data = data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength);
    this.type = type;
    this.timestamp = timestamp;
    this.meta = { synchronizationSource: ssrc, payloadType: 96, mimeType, rtpTimestamp: timestamp };
  }
  getMetadata() { return this.meta; }
}
class AudioFrame {
  constructor(data, timestamp, ssrc) {
    this.data = data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength);
    this.timestamp = timestamp;
    this.meta = { synchronizationSource: ssrc, payloadType: 111, mimeType: 'audio/opus', rtpTimestamp: timestamp };
  }
  getMetadata() { return this.meta; }
}
const frameOf = (f, data) => (f.kind === 'audio'
  ? new AudioFrame(data, f.timestamp ?? 0, f.ssrc ?? 0)
  : new VideoFrame(data, f.type, f.timestamp ?? 0, f.ssrc ?? 0, f.mime));

// transform pipes frames through one cryptor (one track) and returns what
// it let through, in order.
let track = 0;
async function transform(op, participant, frames, codec) {
  const out = [];
  let done;
  const finished = new Promise((r) => { done = r; });
  const readable = new ReadableStream({ start(c) { frames.forEach((f) => c.enqueue(f)); c.close(); } });
  const writable = new WritableStream({ write(f) { out.push(f); }, close() { done(); }, abort() { done(); } });
  await send(op, { participantIdentity: participant, trackId: `track-${track++}`, readableStream: readable, writableStream: writable, isReuse: false, codec });
  await finished;
  return out;
}

async function gen() {
  const keys = [
    { participant: '@alice:example.org:ALICEDEVICE', index: 0, key: '000102030405060708090a0b0c0d0e0f' },
    { participant: '@bob:example.org:BOBDEVICE', index: 3, key: 'f0e1d2c3b4a5968778695a4b3c2d1e0f00112233445566778899aabbccddeeff' },
  ];
  for (const k of keys) await setKey(k.participant, k.index, k.key);

  const pattern = (n, seed) => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff);
  const sc = (...nalus) => {
    const parts = [];
    for (const [i, n] of nalus.entries()) parts.push(i === 0 ? [0, 0, 0, 1] : [0, 0, 1], Array.from(n));
    return Uint8Array.from(parts.flat());
  };
  const nal = (header, body) => Uint8Array.from([header, ...body]);
  // VP8: a key frame starts with a 10-byte header (frame tag bit 0 clear,
  // start code 9d 01 2a, width, height), a delta frame's tag has bit 0 set.
  const vp8Key = Uint8Array.from([0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01, ...pattern(200, 7)]);
  const vp8Delta = Uint8Array.from([0x31, 0x0a, 0x01, ...pattern(997, 3)]);
  const zeros = (n) => new Uint8Array(n);
  const cases = [
    { name: 'opus', kind: 'audio', participant: keys[0].participant, ssrc: 0x11223344, timestamp: 960, data: Uint8Array.from([0x78, ...pattern(99, 1)]) },
    { name: 'opus-second', kind: 'audio', participant: keys[0].participant, ssrc: 0x11223344, timestamp: 1920, data: Uint8Array.from([0x78, ...pattern(60, 2)]) },
    { name: 'opus-one-byte', kind: 'audio', participant: keys[0].participant, ssrc: 0x11223344, timestamp: 2880, data: Uint8Array.from([0xf8]) },
    { name: 'vp8-key', kind: 'video', type: 'key', mime: 'video/VP8', participant: keys[1].participant, ssrc: 0xdeadbeef, timestamp: 90000, data: vp8Key },
    { name: 'vp8-delta', kind: 'video', type: 'delta', mime: 'video/VP8', participant: keys[1].participant, ssrc: 0xdeadbeef, timestamp: 93000, data: vp8Delta },
    { name: 'vp9', kind: 'video', type: 'delta', mime: 'video/VP9', participant: keys[0].participant, ssrc: 5, timestamp: 4294967000, data: pattern(300, 9) },
    // H.264 key frame: SPS, PPS, IDR slice; the slice body has zero runs so
    // the ciphertext side needs emulation prevention.
    { name: 'h264-key', kind: 'video', type: 'key', mime: 'video/H264', participant: keys[0].participant, ssrc: 77, timestamp: 180000,
      data: sc(nal(0x67, [0x42, 0xc0, 0x1f, 0x0f, 0xd9, 0x1f, 0x88]), nal(0x68, [0xce, 0x3c, 0x80]), nal(0x65, [0x88, 0x84, ...pattern(400, 5), ...zeros(8), 0x10])) },
    // H.264 delta: AUD, SEI, then a non-IDR slice with 4-byte start codes.
    { name: 'h264-delta', kind: 'video', type: 'delta', mime: 'video/H264', participant: keys[1].participant, ssrc: 78, timestamp: 183000,
      data: sc(nal(0x09, [0xf0]), nal(0x06, [0x05, 0x02, 0xaa, 0xbb, 0x80]), nal(0x41, [0x9a, ...pattern(250, 11), 0, 0, 0, 0, 3, 0, 0, 1, 0x44])) },
    // H.264 two slices in one frame: only the first slice's header is clear.
    { name: 'h264-two-slices', kind: 'video', type: 'delta', mime: 'video/H264', participant: keys[0].participant, ssrc: 79, timestamp: 186000,
      data: sc(nal(0x41, [0x9a, ...pattern(60, 1)]), nal(0x41, [0x9b, ...pattern(60, 2)])) },
    // H.264 without a slice NALU: livekit falls back to VP8's 10/3 bytes.
    { name: 'h264-no-slice', kind: 'video', type: 'key', mime: 'video/H264', participant: keys[0].participant, ssrc: 80, timestamp: 189000,
      data: sc(nal(0x67, [0x42, 0xc0, 0x1f, ...pattern(30, 4)]), nal(0x68, [0xce, 0x3c, 0x80])) },
    // H.264 not in Annex B (leading data): VP8 fallback too.
    { name: 'h264-not-annexb', kind: 'video', type: 'delta', mime: 'video/H264', participant: keys[0].participant, ssrc: 81, timestamp: 192000, data: pattern(50, 8) },
    // H.265: VPS, SPS, PPS, IDR_W_RADL slice (type 19: header 0x26 0x01).
    { name: 'h265-key', kind: 'video', type: 'key', mime: 'video/H265', participant: keys[1].participant, ssrc: 82, timestamp: 195000,
      data: sc(nal(0x40, [0x01, 0x0c, 0x01]), nal(0x42, [0x01, 0x01, 0x60]), nal(0x44, [0x01, 0xc1, 0x72]), nal(0x26, [0x01, 0xaf, ...pattern(120, 6), 0, 0, 2])) },
  ];

  // Each case is its own track (cryptor), as livekit keeps send counters per
  // cryptor and SSRC; cases sharing an SSRC share a track to show the counter.
  const byTrack = new Map();
  for (const c of cases) {
    const k = `${c.participant}|${c.ssrc}`;
    if (!byTrack.has(k)) byTrack.set(k, []);
    byTrack.get(k).push(c);
  }
  const vectors = [];
  for (const group of byTrack.values()) {
    const enc = await transform('encode', group[0].participant, group.map((c) => frameOf(c, c.data)), group[0].mime?.split('/')[1].toLowerCase());
    if (enc.length !== group.length) throw new Error(`encode dropped frames of ${group[0].name}: ${JSON.stringify(posted.filter((m) => m.kind === "error").map((m) => String(m.data.error)))}`);
    // and back through livekit's decoder, so each vector is known to decrypt.
    const dec = await transform('decode', group[0].participant, group.map((c, i) => frameOf(c, new Uint8Array(enc[i].data))), group[0].mime?.split('/')[1].toLowerCase());
    group.forEach((c, i) => {
      if (!dec[i] || hex(dec[i].data) !== hex(c.data)) throw new Error(`livekit does not decrypt its own ${c.name}`);
      const { data, participant, ...rest } = c;
      vectors.push({ ...rest, participant, plain: hex(data), encrypted: hex(enc[i].data) });
    });
  }

  // A ratchet: livekit ratchets bob's key at index 3 (as a ratchetRequest
  // does) and encrypts with the ratcheted key; the chain key it reports is
  // the ratchet's output.
  await send('ratchetRequest', { participantIdentity: keys[1].participant, keyIndex: 3 });
  // the worker does not await the ratchet on its queue: wait for its answer.
  let ratchet;
  for (let i = 0; i < 1000 && !ratchet; i++) {
    ratchet = posted.find((m) => m.kind === 'ratchetKey');
    if (!ratchet) await new Promise((r) => setTimeout(r, 1));
  }
  if (!ratchet) throw new Error('no ratchetKey message');
  const rc = { name: 'opus-ratcheted', kind: 'audio', participant: keys[1].participant, ssrc: 99, timestamp: 480, data: Uint8Array.from([0x78, 1, 2, 3, 4, 5, 6, 7]) };
  const renc = await transform('encode', rc.participant, [frameOf(rc, rc.data)]);
  const { data: rdata, ...rrest } = rc;
  return {
    source: `livekit-client ${pkg.version} dist/livekit-client.e2ee.worker.mjs (node ${process.version})`,
    keyProviderOptions,
    mathRandom: RANDOM,
    initialSendCount: Math.floor(RANDOM * 0xffff),
    keys,
    vectors,
    ratchet: {
      participant: keys[1].participant,
      index: 3,
      chainKey: hex(ratchet.data.ratchetResult.chainKey),
      frame: { ...rrest, plain: hex(rdata), encrypted: hex(renc[0].data) },
    },
  };
}

async function decrypt() {
  const input = JSON.parse(readFileSync(0, 'utf8'));
  if (input.sifTrailer) await send('setSifTrailer', { trailer: unhex(input.sifTrailer) });
  for (const k of input.keys) await setKey(k.participant, k.index, k.key);
  const frames = [];
  for (const f of input.frames) {
    const out = await transform('decode', f.participant, [frameOf(f, unhex(f.data))], f.mime?.split('/')[1].toLowerCase());
    frames.push({ data: out.length ? hex(out[0].data) : null });
  }
  return { source: `livekit-client ${pkg.version}`, frames, errors: posted.filter((m) => m.kind === 'error').map((m) => String(m.data.error)) };
}

const result = mode === 'gen' ? await gen() : await decrypt();
quiet(JSON.stringify(result, null, 1));

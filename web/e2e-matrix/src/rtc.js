// A MatrixRTC participant as Element Call is one, for icebox's MatrixRTC
// tests (cmd/icebox/rtc_*_test.go): matrix-js-sdk's MatrixRTCSession (call
// membership state events org.matrix.msc3401.call.member, per-participant
// media keys sent as encrypted to-device messages) and livekit-client with
// end-to-end encryption keyed from that session, joining the SFU with the
// JWT that the authorization service's /sfu/get gives for an OpenID token.
// playwright calls window.rtc.*; every function returns JSON-able values.
// Nothing here decides a test: state() reports what the libraries say and
// the Go test judges it.
import * as sdk from 'matrix-js-sdk';
import { MatrixRTCSessionEvent } from 'matrix-js-sdk/lib/matrixrtc/index.js';
import { BaseKeyProvider, Room, RoomEvent, Track } from 'livekit-client';

let client = null;
let session = null;   // MatrixRTCSession of the joined room
let room = null;      // livekit-client Room
let keyProvider = null;
let joinedAt = 0;
const keysFrom = new Map();  // LiveKit identity → media keys the session handed over
// livekit-client's E2EE errors, {t, participant, message}. A MissingKey
// before steadyAt is a key still on its way (a joiner gets media before the
// to-device keys arrive, and livekit-client's worker gets a key a moment
// after the session hands it over; Element Call's tile says KeyMissing
// until media decrypts); any other error, and a MissingKey once every
// participant's media was decrypted (markSteady), is a decryption failure.
const encryptionErrors = [];
// The steady windows [from, to): from markSteady until the page lost the
// SFU (a rejoin hands every key to a new worker, in flight again).
const steady = [];
const log = [];
// livekit-client's connection events (RoomEvent.Reconnecting, Reconnected,
// SignalReconnecting, Disconnected) and the page's rejoins: {t, what}.
const lkEvents = [];
let joinArgs = null;  // join's arguments, for a rejoin
// timing of the last LiveKit connection (ms since the epoch; 0 = not yet):
// jwtAt when /sfu/get answered, connectedAt when livekit-client connected,
// and per kind the first moment a remote encrypted track's receiver had
// decoded media (video: framesDecoded > 0; audio: samples not concealed).
// livekit-client's E2EE transform drops a frame it cannot decrypt before
// the decoder, so decoded media on an encrypted track was decrypted. Read
// by the Go test (rtc.timing) and reported as a figure, never judged.
let timing = { jwtAt: 0, connectedAt: 0, video: 0, audio: 0 };
let timingPoll = null;
let leaving = false;

function note(what) {
  log.push({ t: Date.now(), what });
  if (log.length > 1000) log.shift();
}

async function waitUntil(cond, ms, what) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(what + ' not within ' + ms + ' ms');
}

// SessionKeyProvider keys each participant's media from the MatrixRTC
// session, as Element Call's per-participant E2EE does: every key the
// session reports (ours and those other devices sent us over to-device
// messages) is imported as HKDF key material and set for the LiveKit
// identity of its membership at its index. The ratchet window and keyring
// size are Element Call's.
class SessionKeyProvider extends BaseKeyProvider {
  constructor() {
    super({ ratchetWindowSize: 10, keyringSize: 256 });
  }

  attach(rtcSession) {
    rtcSession.on(MatrixRTCSessionEvent.EncryptionKeyChanged, this.onKey);
    // Keys the session already holds (ours, if it made one before).
    rtcSession.reemitEncryptionKeys();
  }

  detach(rtcSession) {
    rtcSession.off(MatrixRTCSessionEvent.EncryptionKeyChanged, this.onKey);
  }

  onKey = (key, index, membership, identity) => {
    keysFrom.set(identity, (keysFrom.get(identity) || 0) + 1);
    note(`key ${index} for ${identity} (${membership.userId}/${membership.deviceId})`);
    crypto.subtle.importKey('raw', key, 'HKDF', false, ['deriveBits', 'deriveKey']).then(
      (material) => this.onSetEncryptionKey(material, identity, index),
      (e) => note('importKey failed for ' + identity + ': ' + e));
  };
}

// login starts a client for an existing session (the Go test registered
// the user) with the Rust crypto in memory: the media keys travel as
// olm-encrypted to-device messages. It returns after the first sync.
async function login({ baseUrl, userId, accessToken, deviceId }) {
  client = sdk.createClient({ baseUrl, userId, accessToken, deviceId, timelineSupport: false });
  await client.initRustCrypto({ useIndexedDB: false });
  const prepared = new Promise((resolve, reject) => {
    client.on('sync', (state, _prev, data) => {
      if (state === 'PREPARED') resolve();
      if (state === 'ERROR') reject(new Error('sync: ' + (data?.error?.message || 'error')));
    });
  });
  await client.startClient({ initialSyncLimit: 20 });
  await prepared;
  return { userId: client.getUserId(), deviceId: client.getDeviceId(), crypto: !!client.getCrypto() };
}

async function roomReady(roomId) {
  await waitUntil(() => client.getRoom(roomId)?.getMyMembership() === 'join', 20000, 'joined room ' + roomId);
  await waitUntil(() => client.getRoom(roomId)?.hasEncryptionStateEvent(), 20000, 'encryption state of ' + roomId);
  return { members: client.getRoom(roomId).getJoinedMembers().map((m) => m.userId) };
}

// post sends body as JSON to url and returns {status, body (JSON), raw}.
async function post(url, body) {
  const res = await fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* reported below */ }
  return { status: res.status, body: json, raw: json ? '' : text.slice(0, 500) };
}

// getToken is MSC4195's POST <service>/get_token, as the newer Element Call
// sends it (for the failure tests: body is the Go test's).
async function getToken(serviceUrl, body) { return post(serviceUrl + '/get_token', body); }

// sfuGet asks the authorization service for the SFU's URL and a JWT, as
// Element Call's legacy path does (the one its org.matrix.msc3401.call.member
// memberships use): POST {room, openid_token, device_id} to <service>/sfu/get.
async function sfuGet(serviceUrl, roomId, openidToken) {
  return post(serviceUrl + '/sfu/get', { room: roomId, openid_token: openidToken, device_id: client.getDeviceId() });
}

// openID returns an OpenID token of the logged-in user (the Go side's
// failure tests forge or swap them).
async function openID() { return client.getOpenIdToken(); }

// join enters the MatrixRTC session of roomId with the LiveKit transport of
// serviceUrl (Element Call's oldest-membership focus selection), gets a JWT
// from /sfu/get and connects livekit-client with per-participant E2EE,
// publishing Chromium's fake camera and microphone. relay forces
// iceTransportPolicy "relay": media only through the TURN servers that
// LiveKit hands out. With rejoin, a LiveKit connection that livekit-client
// gives up (its own reconnection failed: a restarted SFU knows no room, and
// a JWT cannot create one) is made again as a client re-running its join
// makes it: a new /sfu/get, which makes the room again, and a new Room;
// the MatrixRTC session, its membership and its keys stay. (Element Call
// 0.26.1 has its ConnectionLostError on a LiveKit disconnect commented
// out, so it is not a behaviour of its to copy here.)
async function join({ roomId, serviceUrl, relay, rejoin }) {
  const mroom = client.getRoom(roomId);
  if (!mroom) throw new Error('no room ' + roomId);
  session = client.matrixRTC.getRoomSession(mroom);
  session.on(MatrixRTCSessionEvent.MembershipsChanged, (_old, now) => note('memberships ' + now.map((m) => m.sender + '/' + m.deviceId).join(', ')));
  session.on(MatrixRTCSessionEvent.MembershipManagerError, (e) => note('membership manager error ' + e));
  const transport = { type: 'livekit', livekit_service_url: serviceUrl, livekit_alias: roomId };
  session.joinRoomSession([transport], undefined, { manageMediaKeys: true });
  joinArgs = { roomId, serviceUrl, relay, rejoin: !!rejoin };
  leaving = false;
  return connectLiveKit();
}

// connectLiveKit gets a JWT from /sfu/get and connects a new livekit-client
// Room with a new key provider fed by the session (which hands it every
// key it holds).
async function connectLiveKit() {
  const { roomId, serviceUrl, relay } = joinArgs;
  if (keyProvider) keyProvider.detach(session);
  keyProvider = new SessionKeyProvider();
  keyProvider.attach(session);
  const sfu = await sfuGet(serviceUrl, roomId, await client.getOpenIdToken());
  if (sfu.status !== 200 || !sfu.body?.url || !sfu.body?.jwt) {
    throw new Error('/sfu/get: ' + sfu.status + ' ' + (sfu.raw || JSON.stringify(sfu.body)));
  }
  startTiming();
  // One worker per Room, as Element Call does.
  const worker = new Worker(new URL('./livekit-e2ee-worker.mjs', import.meta.url), { type: 'module' });
  room = new Room({ e2ee: { keyProvider, worker }, adaptiveStream: false, dynacast: false });
  room.on(RoomEvent.EncryptionError, (e, p) => {
    encryptionErrors.push({ t: Date.now(), participant: p?.identity || '', message: String(e?.message || e) });
    if (encryptionErrors.length > 1000) encryptionErrors.shift();
  });
  room.on(RoomEvent.ParticipantConnected, (p) => note('participant connected ' + p.identity));
  room.on(RoomEvent.TrackSubscribed, (t, _pub, p) => {
    note(`subscribed ${t.kind} of ${p.identity}`);
    // Played, as Element Call plays it: Chromium decodes (and measures)
    // received audio only for a sink.
    if (t.kind === Track.Kind.Audio) document.body.appendChild(t.attach());
  });
  room.on(RoomEvent.ParticipantEncryptionStatusChanged, (on, p) => note(`encryption ${on} for ${p?.identity}`));
  const thisRoom = room;
  let connected = false; // a Room that never connected is retried by rejoinLiveKit
  const lk = (what) => { lkEvents.push({ t: Date.now(), what }); note('livekit ' + what); };
  room.on(RoomEvent.Reconnecting, () => lk('reconnecting'));
  room.on(RoomEvent.SignalReconnecting, () => lk('signalReconnecting'));
  room.on(RoomEvent.Reconnected, () => lk('reconnected'));
  room.on(RoomEvent.Disconnected, (r) => {
    // r is livekit-client's DisconnectReason; none when it gave up reconnecting.
    lk(r === undefined ? 'disconnected' : 'disconnected (reason ' + r + ')');
    worker.terminate();
    if (leaving || !joinArgs?.rejoin || room !== thisRoom || !connected) return;
    // Every key goes to the new Room's worker: in flight again.
    const last = steady[steady.length - 1];
    if (last && last.to === Infinity) last.to = Date.now();
    rejoinLiveKit(1);
  });
  await room.setE2EEEnabled(true);
  await room.connect(sfu.body.url, sfu.body.jwt, relay ? { rtcConfig: { iceTransportPolicy: 'relay' } } : {});
  connected = true;
  timing.connectedAt = Date.now();
  await room.localParticipant.enableCameraAndMicrophone();
  joinedAt = Date.now();
  const claims = JSON.parse(atob(sfu.body.jwt.split('.')[1].replace(/-/g, '+').replace(/_/g, '/')));
  return { url: sfu.body.url, identity: room.localParticipant.identity, livekitRoom: room.name, sub: claims.sub, grantRoom: claims.video?.room || '' };
}

// receiverStats sums what one remote track's receiver got, with the
// candidate pair it came over (rtpstats.js, as the other pages measure),
// and what was decoded from it: livekit-client drops a frame it cannot
// decrypt, so decoded video frames and received audio energy (Chromium's
// fake microphone beeps) show that the media was decrypted, not just
// received.
async function receiverStats(track) {
  const receiver = track?.receiver;
  if (!receiver) return null;
  const report = await receiver.getStats();
  const s = await globalThis.rtpStats({ connectionState: 'connected', getStats: async () => report });
  s.framesDecoded = 0;
  s.audioEnergy = 0;
  report.forEach((r) => {
    if (r.type !== 'inbound-rtp') return;
    s.framesDecoded += r.framesDecoded || 0;
    s.audioEnergy += r.totalAudioEnergy || 0;
  });
  return s;
}

// startTiming restarts the timing for a new LiveKit connection: the JWT is
// here; a poll of the remote encrypted tracks' receivers every 20 ms (the
// figure's resolution) notes the first decoded video frame and audio, for
// at most two minutes.
function startTiming() {
  if (timingPoll) clearInterval(timingPoll);
  const t = { jwtAt: Date.now(), connectedAt: 0, video: 0, audio: 0 };
  timing = t;
  let busy = false;
  timingPoll = setInterval(async () => {
    if (busy) return;
    if ((t.video && t.audio) || Date.now() - t.jwtAt > 120000 || timing !== t) {
      clearInterval(timingPoll);
      return;
    }
    busy = true;
    try {
      for (const p of room?.remoteParticipants?.values() || []) {
        for (const pub of p.trackPublications.values()) {
          const receiver = pub.track?.receiver;
          if (!pub.isEncrypted || !receiver) continue;
          const report = await receiver.getStats();
          report.forEach((r) => {
            if (r.type !== 'inbound-rtp') return;
            if (r.kind === 'video' && (r.framesDecoded || 0) > 0 && !t.video) t.video = Date.now();
            if (r.kind === 'audio' && (r.totalSamplesReceived || 0) - (r.concealedSamples || 0) > 0 && !t.audio) t.audio = Date.now();
          });
        }
      }
    } finally {
      busy = false;
    }
  }, 20);
}

// rejoinLiveKit retries connectLiveKit a few times, a second apart (the SFU
// may still be starting); bounded, as a user clicking "Reconnect" is.
async function rejoinLiveKit(attempt) {
  lkEvents.push({ t: Date.now(), what: 'rejoin ' + attempt });
  note('rejoin ' + attempt);
  try {
    const r = await connectLiveKit();
    lkEvents.push({ t: Date.now(), what: 'rejoined' });
    note('rejoined as ' + r.identity);
  } catch (e) {
    note('rejoin ' + attempt + ' failed: ' + e);
    try {
      await room?.disconnect();
    } catch { /* it never connected */ }
    if (attempt < 10 && !leaving) setTimeout(() => rejoinLiveKit(attempt + 1), 1000);
  }
}

const waiting = (e) => e.message.startsWith('MissingKey') && !steady.some((w) => e.t >= w.from && e.t < w.to);

// markSteady is called by the test once every participant decrypts every
// other's media: from then on (until a rejoin) a MissingKey is a failure.
function markSteady() { steady.push({ from: Date.now(), to: Infinity }); }

// state reports the MatrixRTC memberships, the keys the session handed
// over, and per remote LiveKit participant the tracks received with their
// inbound RTP bytes and whether livekit-client decrypts them.
async function state() {
  const out = {
    joined: !!session?.isJoined(), memberships: (session?.memberships || []).map((m) => ({ sender: m.sender, deviceId: m.deviceId, identity: m.rtcBackendIdentity })),
    identity: room?.localParticipant?.identity || '', connection: room?.state || '', e2ee: !!room?.isE2EEEnabled,
    keys: Object.fromEntries(keysFrom),
    waitingForKey: encryptionErrors.filter(waiting).length,
    livekitEvents: lkEvents.slice(-50),
    // The TURN servers LiveKit's join response handed livekit-client (the
    // test checks the credentials against icebox's SFU secret; never logged).
    iceServers: (room?.engine?.latestJoinResponse?.iceServers || []).map((s) => ({ urls: s.urls, username: s.username, credential: s.credential })),
    decryptFailures: encryptionErrors.filter((e) => !waiting(e)).length,
    errorSamples: encryptionErrors.filter((e) => !waiting(e)).slice(0, 5),
    remotes: [], publishing: [],
  };
  if (!room) return out;
  for (const pub of room.localParticipant.trackPublications.values()) {
    out.publishing.push({ kind: pub.kind, encrypted: pub.isEncrypted, muted: pub.isMuted });
  }
  for (const p of room.remoteParticipants.values()) {
    const r = { identity: p.identity, encrypted: p.isEncrypted, tracks: [] };
    for (const pub of p.trackPublications.values()) {
      const s = await receiverStats(pub.track);
      r.tracks.push({
        kind: pub.kind, source: pub.source, subscribed: pub.isSubscribed, encrypted: pub.isEncrypted,
        bytes: s ? (pub.kind === Track.Kind.Video ? s.videoBytesIn : s.audioBytesIn) : 0,
        framesDecoded: s?.framesDecoded || 0, audioEnergy: s?.audioEnergy || 0,
        local: s?.local || null, remote: s?.remote || null,
      });
    }
    out.remotes.push(r);
  }
  return out;
}

// leave disconnects from LiveKit and leaves the MatrixRTC session (its
// membership event is emptied).
async function leave() {
  leaving = true;
  joinArgs = null;
  if (timingPoll) clearInterval(timingPoll);
  if (room) await room.disconnect();
  room = null;
  if (session) {
    keyProvider.detach(session);
    await session.leaveRoomSession(5000);
  }
  session = null;
  keyProvider = null;
  keysFrom.clear();
  steady.length = 0;
  lkEvents.length = 0;
  encryptionErrors.length = 0;
}

const events = (since) => log.filter((e) => e.t >= (since || 0));

window.rtc = { ready: true, login, roomReady, openID, sfuGet, getToken, join, state, markSteady, leave, events, joinedAt: () => joinedAt, timing: () => ({ ...timing }) };

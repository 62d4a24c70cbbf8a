// The Matrix side of icebox's browser tests: matrix-js-sdk's own call code
// (MatrixCall, the code inside Element Web and Desktop), logged in with an
// access token the Go test made, media relay-only through the TURN servers
// of the homeserver's /voip/turnServer. playwright calls window.harness.*;
// every function returns JSON-able values. Nothing here decides a test:
// state() reports what matrix-js-sdk says and the Go test judges it.
import * as sdk from 'matrix-js-sdk';

const calls = new Map(); // call ID → MatrixCall (placed or incoming)
const incoming = [];     // call IDs of incoming calls, in arrival order
const log = [];          // {t, call, what}: what matrix-js-sdk reported
const received = [];     // m.call.* events the client got (decrypted): {call, type, sender, reason, party, selected}
let client = null;

function note(callId, what) {
  log.push({ t: Date.now(), call: callId || '', what });
  if (log.length > 1000) log.shift();
}

// recordCallEvent keeps what an m.call.* event of the room timeline said,
// whether or not matrix-js-sdk's call code still acts on it (an ended call
// ignores a later hangup).
function recordCallEvent(ev) {
  const type = ev.getType();
  if (!type.startsWith('m.call.')) return;
  const c = ev.getContent();
  received.push({ call: c.call_id || '', type, sender: ev.getSender(), reason: c.reason || '', party: c.party_id || '', selected: c.selected_party_id || '' });
  if (received.length > 2000) received.shift();
}

function track(call) {
  calls.set(call.callId, call);
  const id = call.callId;
  call.on('state', (s, old) => note(id, `state ${old} -> ${s}`));
  call.on('hangup', () => note(id, `hangup party=${call.hangupParty} reason=${call.hangupReason}`));
  call.on('error', (e) => note(id, `error ${e.code}: ${e.message}`));
  call.on('remote_hold_unhold', (h) => note(id, `remote hold ${h}`));
  call.on('local_hold_unhold', (h) => note(id, `local hold ${h}`));
  call.on('feeds_changed', (feeds) => note(id, 'feeds ' + feeds.map((f) => (f.isLocal() ? 'local ' : 'remote ') + f.purpose).join(', ')));
  call.on('peer_connection_created', (pc) => {
    pc.addEventListener('signalingstatechange', () => note(id, 'signaling ' + pc.signalingState));
    pc.addEventListener('iceconnectionstatechange', () => note(id, 'ice ' + pc.iceConnectionState));
  });
}

function mustCall(callId) {
  const call = calls.get(callId);
  if (!call) throw new Error('no call ' + callId);
  return call;
}

async function waitUntil(cond, ms, what) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(what + ' not within ' + ms + ' ms');
}

// login starts a client for an existing session (the Go test registered
// the user); with encryption, matrix-js-sdk's Rust crypto (wasm) in memory.
// It returns once the first sync is done and the TURN servers are known.
async function login({ baseUrl, userId, accessToken, deviceId, encryption }) {
  client = sdk.createClient({
    baseUrl, userId, accessToken, deviceId,
    forceTURN: true,               // iceTransportPolicy "relay": media only through icebox's relay
    fallbackICEServerAllowed: false,
    timelineSupport: false,
  });
  if (encryption) await client.initRustCrypto({ useIndexedDB: false });
  // ClientEvent.Event; an encrypted one is recorded once decrypted
  // (MatrixEventEvent.Decrypted).
  client.on('event', (ev) => {
    if (ev.getType() === 'm.room.encrypted') ev.once('Event.decrypted', () => recordCallEvent(ev));
    else recordCallEvent(ev);
  });
  client.on('Call.incoming', (call) => {
    track(call);
    incoming.push(call.callId);
    note(call.callId, 'incoming from ' + (call.getOpponentMember()?.userId || '?') + ' type ' + call.type);
  });
  const prepared = new Promise((resolve, reject) => {
    client.on('sync', (state, _prev, data) => {
      if (state === 'PREPARED') resolve();
      if (state === 'ERROR') reject(new Error('sync: ' + (data?.error?.message || 'error')));
    });
  });
  await client.startClient({ initialSyncLimit: 20 });
  await prepared;
  await waitUntil(() => client.getTurnServers().length > 0, 15000, 'TURN servers from /voip/turnServer');
  return {
    userId: client.getUserId(), deviceId: client.getDeviceId(), crypto: !!client.getCrypto(),
    turnServers: client.getTurnServers().map((s) => ({ urls: s.urls, username: s.username })),
  };
}

// roomReady waits until the client knows the room as joined (and, for an
// encrypted room, that it is encrypted).
async function roomReady(roomId, encrypted) {
  await waitUntil(() => client.getRoom(roomId)?.getMyMembership() === 'join', 20000, 'joined room ' + roomId);
  if (encrypted) {
    await waitUntil(() => client.getRoom(roomId)?.hasEncryptionStateEvent(), 20000, 'encryption state of ' + roomId);
  }
  return { members: client.getRoom(roomId).getJoinedMembers().map((m) => m.userId) };
}

async function placeCall(roomId, kind) {
  const call = sdk.createNewMatrixCall(client, roomId);
  if (!call) throw new Error('createNewMatrixCall: this browser cannot do VoIP');
  track(call);
  note(call.callId, 'placing ' + kind + ' call in ' + roomId);
  if (kind === 'video') await call.placeVideoCall();
  else await call.placeVoiceCall();
  return call.callId;
}

const incomingCalls = () => incoming.slice();

async function answer(callId, audio, video) {
  await mustCall(callId).answer(audio, video);
}

function hangup(callId, reason) { mustCall(callId).hangup(reason || 'user_hangup', false); }
function reject(callId) { mustCall(callId).reject(); }
function setRemoteOnHold(callId, onHold) { mustCall(callId).setRemoteOnHold(onHold); }
async function setMicrophoneMuted(callId, muted) { return mustCall(callId).setMicrophoneMuted(muted); }
async function setLocalVideoMuted(callId, muted) { return mustCall(callId).setLocalVideoMuted(muted); }
async function setScreensharingEnabled(callId, on) { return mustCall(callId).setScreensharingEnabled(on); }
async function upgradeCall(callId, audio, video) { return mustCall(callId).upgradeCall(audio, video); }
// restartIce is what matrix-js-sdk does by itself after 2 s of ICE
// "disconnected" (onIceConnectionStateChanged); negotiationneeded then
// sends the new offer as m.call.negotiate.
function restartIce(callId) { mustCall(callId).peerConn.restartIce(); }
async function leaveRoom(roomId) { await client.leave(roomId); }


// state is what matrix-js-sdk reports about a call.
async function state(callId) {
  const call = mustCall(callId);
  const pc = call.peerConn;
  return {
    callId, state: call.state, type: call.type, direction: call.direction,
    hangupParty: call.hangupParty || '', hangupReason: call.hangupReason || '',
    remoteOnHold: call.isRemoteOnHold(), localOnHold: call.isLocalOnHold(),
    micMuted: call.isMicrophoneMuted(), videoMuted: call.isLocalVideoMuted(),
    screensharing: call.isScreensharing(),
    opponentSupportsMetadata: call.opponentSupportsSDPStreamMetadata(),
    opponentPartyId: call.opponentPartyId ?? null,
    feeds: call.getFeeds().map((f) => ({
      local: f.isLocal(), purpose: f.purpose, streamId: f.stream.id,
      audioMuted: f.isAudioMuted(), videoMuted: f.isVideoMuted(),
      audioTracks: f.stream.getAudioTracks().length, videoTracks: f.stream.getVideoTracks().length,
    })),
    signalingState: pc ? pc.signalingState : '',
    iceConnectionState: pc ? pc.iceConnectionState : '',
    stats: await globalThis.rtpStats(pc),
  };
}

const events = (since) => log.filter((e) => e.t >= (since || 0));
const callEvents = (callId) => received.filter((e) => e.call === callId);

window.harness = {
  ready: true, login, roomReady, placeCall, incomingCalls, answer, hangup, reject, setRemoteOnHold,
  setMicrophoneMuted, setLocalVideoMuted, setScreensharingEnabled, upgradeCall, restartIce, leaveRoom,
  state, events, callEvents,
};

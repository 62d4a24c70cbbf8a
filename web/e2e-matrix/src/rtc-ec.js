// Element Call's embedded build (@element-hq/element-call-embedded, the
// widget Element Web and Element X load) as a MatrixRTC participant of
// icebox's tests: this page is the widget's host, as Element Web is — a
// matrix-js-sdk client (Rust crypto) behind matrix-widget-api's
// ClientWidgetApi, with a driver that sends the widget's events and
// to-device messages, reads room state, hands out OpenID tokens and the
// RTC transport (icebox's authorization service), and feeds the widget the
// room's events, state and decrypted to-device messages. Element Call does
// the rest itself: MatrixRTC membership, media keys, /sfu/get, LiveKit.
// playwright calls window.ec.*.
import * as sdk from 'matrix-js-sdk';
import { ClientWidgetApi, OpenIDRequestState, WidgetDriver, Widget } from 'matrix-widget-api';

let client = null;
let api = null;
let frame = null;
let roomId = '';
let service = '';
const log = [];

function note(what) {
  log.push({ t: Date.now(), what: String(what).slice(0, 500) });
  if (log.length > 2000) log.shift();
}

async function login({ baseUrl, userId, accessToken, deviceId }) {
  client = sdk.createClient({ baseUrl, userId, accessToken, deviceId });
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

// Driver is what Element Web's widget driver does for Element Call, on the
// one room of the test, every capability granted.
class Driver extends WidgetDriver {
  async validateCapabilities(requested) { return new Set(requested); }

  async sendEvent(type, content, stateKey = null, room = null) {
    room = room || roomId;
    const r = stateKey !== null && stateKey !== undefined
      ? await client.sendStateEvent(room, type, content, stateKey)
      : await client.sendEvent(room, type, content);
    note(`sent ${type} ${stateKey ?? ''}`);
    return { roomId: room, eventId: r.event_id };
  }

  // MSC4140 delayed events: asked of the homeserver as Element Web does;
  // Dendrite answers M_UNRECOGNIZED and Element Call goes on without.
  async sendDelayedEvent(delay, type, content, stateKey = null, room = null) {
    room = room || roomId;
    const r = stateKey !== null && stateKey !== undefined
      ? await client._unstable_sendDelayedStateEvent(room, { delay }, type, content, stateKey)
      : await client._unstable_sendDelayedEvent(room, { delay }, null, type, content);
    return { roomId: room, delayId: r.delay_id };
  }

  async cancelScheduledDelayedEvent(id) { await client._unstable_cancelScheduledDelayedEvent(id); }
  async restartScheduledDelayedEvent(id) { await client._unstable_restartScheduledDelayedEvent(id); }
  async sendScheduledDelayedEvent(id) { await client._unstable_sendScheduledDelayedEvent(id); }

  async sendToDevice(type, encrypted, contentMap) {
    note(`to-device ${type} encrypted=${encrypted} to ${Object.keys(contentMap).join(',')}`);
    if (!encrypted) {
      const m = new Map();
      for (const [u, devs] of Object.entries(contentMap)) m.set(u, new Map(Object.entries(devs)));
      await client.sendToDevice(type, m);
      return;
    }
    // The same content to several devices goes out in one call.
    const groups = new Map();
    for (const [userId, devs] of Object.entries(contentMap)) {
      for (const [deviceId, content] of Object.entries(devs)) {
        const k = JSON.stringify(content);
        if (!groups.has(k)) groups.set(k, { content, devices: [] });
        groups.get(k).devices.push({ userId, deviceId });
      }
    }
    for (const g of groups.values()) await client.encryptAndSendToDevice(type, g.devices, g.content);
  }

  async readRoomState(room, type, stateKey) {
    const r = client.getRoom(room);
    if (!r) return [];
    const evs = stateKey === undefined ? r.currentState.getStateEvents(type) : [r.currentState.getStateEvents(type, stateKey)].filter(Boolean);
    return evs.map((e) => e.getEffectiveEvent());
  }

  async readRoomTimeline(room, type, _msgtype, stateKey, limit) {
    const r = client.getRoom(room);
    if (!r) return [];
    const evs = r.getLiveTimeline().getEvents().filter((e) => e.getType() === type && (stateKey === undefined || e.getStateKey() === stateKey));
    return evs.slice(-(limit || evs.length)).map((e) => e.getEffectiveEvent());
  }

  async readStickyEvents() { return []; }

  askOpenID(observer) {
    client.getOpenIdToken().then(
      (token) => observer.update({ state: OpenIDRequestState.Allowed, token }),
      (e) => { note('openid ' + e); observer.update({ state: OpenIDRequestState.Blocked }); });
  }

  // MSC4143: the homeserver's RTC transports, here icebox's service.
  async getRtcTransports() {
    return { rtc_transports: [{ type: 'livekit', livekit_service_url: service }] };
  }

  getKnownRooms() { return [roomId]; }

  processError(error) {
    // A homeserver's refusal goes to the widget as a Matrix API error, so
    // that matrix-js-sdk inside it sees the errcode (M_UNRECOGNIZED for
    // delayed events on Dendrite).
    if (error && error.httpStatus && error.data) {
      return { matrix_api_error: { http_status: error.httpStatus, http_headers: {}, url: error.url || '', response: error.data } };
    }
    return undefined;
  }
}

// start opens Element Call in an iframe of this page for roomId, joining
// the call at once (skipLobby) with per-participant E2EE.
// intent is Element Call's: join_existing (default), or e.g. start_call_dm,
// with which it rings the room (MSC4075) as Element X starts a DM call.
async function start({ room, serviceUrl, ecPath, intent }) {
  roomId = room;
  service = serviceUrl;
  const params = new URLSearchParams({
    widgetId: 'ec-test', parentUrl: location.href, roomId, userId: client.getUserId(), deviceId: client.getDeviceId(),
    baseUrl: client.baseUrl, intent: intent || 'join_existing', skipLobby: 'true', perParticipantE2EE: 'true',
    confineToRoom: 'true', header: 'none', lang: 'en', theme: 'dark', appPrompt: 'false',
  });
  const url = new URL(ecPath + '#?' + params.toString(), location.href).toString();
  frame = document.createElement('iframe');
  frame.allow = 'camera; microphone; display-capture; autoplay';
  frame.style.width = '800px';
  frame.style.height = '600px';
  // ClientWidgetApi talks to the frame's window, which exists once the
  // frame is in the document.
  document.body.appendChild(frame);
  const widget = new Widget({ id: 'ec-test', creatorUserId: client.getUserId(), type: 'm.custom', url, waitForIframeLoad: false });
  api = new ClientWidgetApi(widget, frame, new Driver());
  api.on('ready', () => { note('widget ready'); api.setViewedRoomId(roomId); });
  api.on('preparing', () => note('widget preparing'));
  api.on('error:preparing', (e) => note('widget error ' + e));
  frame.src = url;

  client.on(sdk.RoomEvent.Timeline, async (ev, r, toStart) => {
    if (toStart || r?.roomId !== roomId) return;
    await client.decryptEventIfNeeded(ev);
    api.feedEvent(ev.getEffectiveEvent()).catch((e) => note('feedEvent ' + e));
  });
  client.on(sdk.RoomStateEvent.Events, (ev) => {
    if (ev.getRoomId() !== roomId) return;
    api.feedStateUpdate(ev.getEffectiveEvent()).catch((e) => note('feedStateUpdate ' + e));
  });
  client.on(sdk.ClientEvent.ReceivedToDeviceMessage, ({ message, encryptionInfo }) => {
    note(`to-device in ${message.type} from ${message.sender} encrypted=${!!encryptionInfo}`);
    api.feedToDevice(message, !!encryptionInfo).catch((e) => note('feedToDevice ' + e));
  });
  return { url };
}

// state reports what Element Call receives — inbound RTP of the peer
// connections it made (the test's init script keeps them in
// window.__iceboxPCs of the frame), decoded video frames and audio energy —
// and what it shows: its video elements, from inside the same-origin frame.
async function state() {
  const doc = frame?.contentDocument;
  if (!doc) return { videos: [], audios: 0, rtp: null };
  const rtp = { audioBytesIn: 0, videoBytesIn: 0, framesDecoded: 0, audioEnergy: 0, pcs: 0, local: [] };
  for (const pc of frame.contentWindow.__iceboxPCs || []) {
    if (pc.connectionState === 'closed') continue;
    rtp.pcs++;
    const report = await pc.getStats();
    const s = await globalThis.rtpStats({ connectionState: pc.connectionState, getStats: async () => report });
    rtp.audioBytesIn += s.audioBytesIn;
    rtp.videoBytesIn += s.videoBytesIn;
    if (s.local) rtp.local.push(s.local);
    report.forEach((r) => {
      if (r.type !== 'inbound-rtp') return;
      rtp.framesDecoded += r.framesDecoded || 0;
      rtp.audioEnergy += r.totalAudioEnergy || 0;
    });
  }
  const videos = [...doc.querySelectorAll('video')].map((v) => ({
    width: v.videoWidth, height: v.videoHeight, playing: !v.paused,
    frames: v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality().totalVideoFrames : 0,
  }));
  return { videos, audios: doc.querySelectorAll('audio').length, rtp };
}

// hangup asks Element Call to leave the call, as its host's hangup button
// does (Element Web sends the widget im.vector.hangup).
async function hangup() {
  await api.transport.send('im.vector.hangup', {});
  return true;
}

const events = (since) => log.filter((e) => e.t >= (since || 0));

window.ec = { ready: true, login, start, state, events, hangup };

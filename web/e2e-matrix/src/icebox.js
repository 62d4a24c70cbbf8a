// The icebox side of the Matrix browser tests: a client of icebox's own
// WebSocket API (README: commands initiate, answer, candidates, negotiate,
// reject, hangup; events CallInvite…, CallNegotiate, CallHangup…) with real
// WebRTC media, relay-only through the per-call TURN credentials icebox
// hands out. The page's origin proxies /icebox/ to icebox's HTTP API.
// playwright calls window.icebox.*; state() reports, the Go test judges.
'use strict';

(() => {
  const party = 'jsp' + Array.from(crypto.getRandomValues(new Uint8Array(6)), (b) => b.toString(16).padStart(2, '0')).join('');
  let token = '';
  let ws = null;
  let ref = 0;
  const pending = new Map();  // ref → {resolve, reject}
  const calls = new Map();    // call ID → {id, role, status, pc, local, queue, events, negotiations}
  const invites = [];         // CallInvite… payloads not answered yet
  const log = [];             // {t, call, what}
  // sendUfrag: send each candidate's usernameFragment (issue 15 has icebox
  // pass it through; before that, icebox refuses the unknown field).
  // sendMetadata: send sdp_stream_metadata with initiate, answer and
  // negotiate (issue 15; before it, icebox refuses the unknown field).
  const options = { sendUfrag: false, sendMetadata: false };

  // metadata is our sdp_stream_metadata: the local stream's id, as in the
  // SDP's msid, is what matrix-js-sdk maps its feeds by.
  function metadata(c) {
    if (!options.sendMetadata || !c.local) return {};
    const a = c.local.getAudioTracks()[0], v = c.local.getVideoTracks()[0];
    return { sdp_stream_metadata: { [c.local.id]: { purpose: 'm.usermedia', audio_muted: !a || !a.enabled, video_muted: !v || !v.enabled } } };
  }

  function note(callId, what) {
    log.push({ t: Date.now(), call: callId || '', what });
    if (log.length > 1000) log.shift();
  }

  function api(method, path, body) {
    return fetch('/icebox' + path, {
      method, headers: { Authorization: 'Bearer ' + token, 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    }).then(async (r) => {
      const text = await r.text();
      if (!r.ok) throw new Error(method + ' ' + path + ': ' + r.status + ' ' + text);
      return text ? JSON.parse(text) : null;
    });
  }

  function connect(tok) {
    token = tok;
    return new Promise((resolve, reject) => {
      const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/icebox/ws';
      ws = new WebSocket(url, ['bearer.' + token]);
      ws.onopen = () => { note('', 'ws open'); resolve(party); };
      ws.onerror = () => reject(new Error('WebSocket error'));
      ws.onclose = (e) => note('', 'ws closed ' + e.code + ' ' + e.reason);
      ws.onmessage = (e) => {
        const msg = JSON.parse(e.data);
        if (msg.type === 'reply' || msg.type === 'error') {
          const p = pending.get(msg.ref);
          if (!p) return;
          pending.delete(msg.ref);
          if (msg.type === 'reply') p.resolve(msg.result);
          else p.reject(new Error(JSON.stringify(msg.error)));
          return;
        }
        onEvent(msg).catch((err) => note(msg.call_id, 'error handling ' + msg.type + ': ' + err.message));
      };
    });
  }

  function command(type, fields) {
    return new Promise((resolve, reject) => {
      if (!ws || ws.readyState !== WebSocket.OPEN) { reject(new Error('WebSocket not open')); return; }
      const r = String(++ref);
      pending.set(r, { resolve, reject });
      ws.send(JSON.stringify({ type, ref: r, party_id: party, ...fields }));
    });
  }

  // Chromium's fake devices (--use-fake-device-for-media-stream): a beep and
  // a test pattern.
  const media = (video) => navigator.mediaDevices.getUserMedia({ audio: true, video: !!video });

  function newCall(id, role) {
    const c = { id, role, status: 'new', pc: null, local: null, queue: [], events: [], negotiations: { sent: [], received: [] } };
    calls.set(id, c);
    return c;
  }

  function peer(c, iceServers) {
    const pc = new RTCPeerConnection({ iceServers, iceTransportPolicy: 'relay', bundlePolicy: 'max-bundle' });
    c.pc = pc;
    pc.oniceconnectionstatechange = () => note(c.id, 'ice ' + pc.iceConnectionState);
    pc.onsignalingstatechange = () => note(c.id, 'signaling ' + pc.signalingState);
    for (const t of c.local.getTracks()) pc.addTrack(t, c.local);
    return pc;
  }

  // trickle sends local candidates in batches once ready() allows; an
  // end-of-candidates marker ends each generation.
  function trickle(c, ready) {
    let batch = [];
    let timer = null;
    const flush = async () => {
      timer = null;
      if (!ready() || !batch.length) return;
      const candidates = batch.splice(0);
      try { await command('candidates', { call_id: c.id, candidates }); } catch (e) { note(c.id, 'candidates failed: ' + e.message); }
    };
    c.pc.onicecandidate = (e) => {
      const x = e.candidate;
      if (x && x.candidate) {
        const cand = { candidate: x.candidate, sdpMid: x.sdpMid, sdpMLineIndex: x.sdpMLineIndex };
        if (options.sendUfrag) cand.usernameFragment = x.usernameFragment;
        batch.push(cand);
      } else {
        batch.push({ candidate: '' });
      }
      if (!timer) timer = setTimeout(flush, 100);
    };
    return () => { if (!timer) timer = setTimeout(flush, 0); };
  }

  async function addRemote(c, candidates) {
    for (const x of candidates) {
      if (!x.candidate) continue;
      try { await c.pc.addIceCandidate(x); } catch (e) { note(c.id, 'remote candidate refused: ' + e.message); }
    }
  }

  // Renegotiation from our side (ICE restart, hold): the offer goes out
  // with the negotiate command.
  function renegotiateOnDemand(c) {
    c.pc.onnegotiationneeded = async () => {
      if (c.status !== 'answered') return;
      try {
        const offer = await c.pc.createOffer();
        await c.pc.setLocalDescription(offer);
        c.negotiations.sent.push('offer');
        await command('negotiate', { call_id: c.id, description: { type: 'offer', sdp: offer.sdp }, ...metadata(c) });
        note(c.id, 'negotiate offer sent');
      } catch (e) { note(c.id, 'negotiate offer failed: ' + e.message); }
    };
  }

  // lifetimeMs, if given, is the invite's lifetime_ms (icebox's
  // invite_lifetime otherwise).
  async function placeCall(conversationId, invitee, video, lifetimeMs) {
    const local = await media(video);
    const pcTmp = { local };
    const offerPC = new RTCPeerConnection({ iceTransportPolicy: 'relay', bundlePolicy: 'max-bundle' });
    for (const t of local.getTracks()) offerPC.addTrack(t, local);
    const offer = await offerPC.createOffer();
    const fields = { conversation_id: conversationId, sdp_offer: offer.sdp, ...metadata({ local }) };
    if (invitee) fields.invitee = invitee;
    if (lifetimeMs) fields.lifetime_ms = lifetimeMs;
    const res = await command('initiate', fields);
    const c = newCall(res.id, 'caller');
    c.status = res.status;
    c.local = pcTmp.local;
    c.pc = offerPC;
    offerPC.oniceconnectionstatechange = () => note(c.id, 'ice ' + offerPC.iceConnectionState);
    offerPC.onsignalingstatechange = () => note(c.id, 'signaling ' + offerPC.signalingState);
    offerPC.setConfiguration({ iceServers: res.ice_servers || [], iceTransportPolicy: 'relay', bundlePolicy: 'max-bundle' });
    trickle(c, () => true);
    await offerPC.setLocalDescription(offer);
    note(c.id, 'initiated: ' + res.status);
    return res.id;
  }

  async function answer(callId, video) {
    const i = invites.findIndex((v) => v.call_id === callId);
    if (i < 0) throw new Error('no invite for ' + callId);
    const inv = invites.splice(i, 1)[0];
    const c = calls.get(callId) || newCall(callId, 'callee');
    const ice = await api('GET', '/calls/ice_servers?call_id=' + encodeURIComponent(callId));
    c.local = await media(video);
    const pc = peer(c, ice.ice_servers);
    let answered = false;
    const flush = trickle(c, () => answered);
    await pc.setRemoteDescription({ type: 'offer', sdp: inv.sdp_offer });
    await addRemote(c, c.queue.splice(0));
    const ans = await pc.createAnswer();
    await pc.setLocalDescription(ans);
    const res = await command('answer', { call_id: callId, sdp_answer: ans.sdp, ...metadata(c) });
    answered = true;
    c.status = res.status;
    flush();
    renegotiateOnDemand(c);
    note(callId, 'answered: ' + res.status);
    return res.status;
  }

  async function end(type, callId) {
    const res = await command(type, { call_id: callId });
    const c = calls.get(callId);
    if (c) { c.status = res.status; close(c); }
    return res.status;
  }

  function close(c) {
    if (c.pc) c.pc.close();
    if (c.local) c.local.getTracks().forEach((t) => t.stop());
  }

  async function onEvent(ev) {
    const type = ev.type.replace(/ViaMatrix$/, '');
    const c = calls.get(ev.call_id);
    if (c) c.events.push(ev.type);
    note(ev.call_id, 'event ' + ev.type + (ev.party_id === party ? ' (ours)' : ''));
    if (ev.party_id === party) return;
    switch (type) {
      case 'CallInvite': {
        const n = calls.get(ev.call_id) || newCall(ev.call_id, 'callee');
        if (!c) n.events.push(ev.type);
        n.peerMetadata = ev.sdp_stream_metadata || null;
        n.peerCapabilities = ev.capabilities || null;
        invites.push(ev);
        return;
      }
        return;
      case 'CallAnswer':
        if (!c || c.role !== 'caller') return;
        c.status = ev.status;
        c.peerMetadata = ev.sdp_stream_metadata || null;
        c.peerCapabilities = ev.capabilities || null;
        await c.pc.setRemoteDescription({ type: 'answer', sdp: ev.sdp_answer });
        await addRemote(c, c.queue.splice(0));
        renegotiateOnDemand(c);
        return;
      case 'CallCandidates':
        if (!c) return;
        c.candidatesSeen = (c.candidatesSeen || []).concat(ev.candidates);
        if (c.pc && c.pc.remoteDescription) await addRemote(c, ev.candidates);
        else c.queue.push(...ev.candidates);
        return;
      case 'CallNegotiate': {
        if (!c || !c.pc) return;
        const d = ev.description;
        note(c.id, 'negotiate ' + d.type + ' received in ' + c.pc.signalingState);
        if (ev.sdp_stream_metadata) c.remoteMetadata = ev.sdp_stream_metadata;
        if (d.type === 'offer') {
          await c.pc.setRemoteDescription(d);
          const ans = await c.pc.createAnswer();
          await c.pc.setLocalDescription(ans);
          c.negotiations.sent.push('answer');
          await command('negotiate', { call_id: c.id, description: { type: 'answer', sdp: ans.sdp }, ...metadata(c) });
        } else {
          await c.pc.setRemoteDescription(d);
        }
        // Counted once handled: an offer answered, an answer applied (so
        // that "received and stable" means the new description is in place).
        c.negotiations.received.push(d.type);
        return;
      }
      case 'CallStreamMetadataChanged':
        if (c) { c.remoteMetadata = ev.sdp_stream_metadata; c.metadataChanges = (c.metadataChanges || 0) + 1; }
        return;
      case 'CallHangup':
      case 'CallRejected':
        if (c) { c.status = ev.status; c.endReason = ev.reason || ''; close(c); }
        return;
      default:
    }
  }

  async function state(callId) {
    const c = calls.get(callId);
    if (!c) return null;
    const pc = c.pc;
    return {
      callId, role: c.role, status: c.status, endReason: c.endReason || '', events: c.events.slice(),
      negotiations: c.negotiations, remoteMetadata: c.remoteMetadata || null, metadataChanges: c.metadataChanges || 0,
      peerMetadata: c.peerMetadata || null, peerCapabilities: c.peerCapabilities || null,
      transceivers: pc ? pc.getTransceivers().map((x) => ({ mid: x.mid, kind: x.receiver.track.kind, direction: x.direction, currentDirection: x.currentDirection })) : [],
      candidatesSeen: (c.candidatesSeen || []).length,
      candidatesWithUfrag: (c.candidatesSeen || []).filter((x) => x.usernameFragment).length,
      signalingState: pc ? pc.signalingState : '', iceConnectionState: pc ? pc.iceConnectionState : '',
      stats: await globalThis.rtpStats(pc),
    };
  }

  window.icebox = {
    ready: true, party, connect, placeCall, answer, state,
    setOptions: (o) => Object.assign(options, o),
    invites: () => invites.map((v) => ({ callId: v.call_id, type: v.type, from: v.initiator_id, conversation: v.conversation_id })),
    hangup: (id) => end('hangup', id),
    reject: (id) => end('reject', id),
    restartIce: (id) => calls.get(id).pc.restartIce(),
    // hold puts the Matrix side on hold as Element does (our transceivers
    // sendonly, then sendrecv): negotiationneeded sends the offer.
    hold: (id, on) => { for (const x of calls.get(id).pc.getTransceivers()) x.direction = on ? 'sendonly' : 'sendrecv'; },
    // mute disables our microphone and tells the Matrix side with the
    // metadata_changed command (issue 15).
    mute: async (id, muted) => {
      const c = calls.get(id);
      c.local.getAudioTracks().forEach((t) => { t.enabled = !muted; });
      await command('metadata_changed', { call_id: id, ...metadata(c) });
    },
    events: (since) => log.filter((e) => e.t >= (since || 0)),
  };
})();

// The call demo: WebSocket signaling with icebox's commands (initiate,
// answer, candidates, reject, hangup) and events (CallInvite, CallAnswer,
// CallCandidates, CallHangup, …), media through the per-call TURN
// credentials icebox returns, a generated stream when there is no camera.
'use strict';

(() => {
  const { api, explain, openSocket, userOf, el, $, fmtTime } = Icebox;
  // This tab's party: icebox tells parties apart by it, so our own echoes
  // (events go to every participant, us included) are recognised.
  const party = 'ui' + Array.from(crypto.getRandomValues(new Uint8Array(8)), (b) => b.toString(16).padStart(2, '0')).join('');
  const CANDIDATE_BATCH_MS = 50;

  let me = '';
  let ws = null;
  let ref = 0;
  const pending = new Map();        // ref → {resolve, reject}
  let call = null;                  // {id, role, status}
  let incoming = null;              // CallInvite payload waiting for an answer
  let pc = null;
  let local = null;                 // local MediaStream (with .stopAll)
  const remoteQueue = new Map();    // call_id → candidates received before the remote description
  let statsTimer = null;

  // --- conversations ---------------------------------------------------------
  //
  // The list is the conversations the signed-in user takes part in, newest
  // first, from GET /conversations a page at a time ("more" follows its
  // cursor); each shows who else is in it and its last call (GET
  // /calls?conversation_id=&limit=1). A conversation must exist before
  // anyone calls in it: an admin creates it (PUT /admin/conversations/{id}),
  // or icebox's Matrix bridge makes one of each room it joins.
  const PAGE = 20;
  let convs = [];          // listed so far, in order
  let nextCursor = '';     // '' when the list is complete
  async function lastCall(id) {
    try {
      const r = await api('GET', '/calls?conversation_id=' + encodeURIComponent(id) + '&limit=1');
      const c = r.calls && r.calls[0];
      return c ? c.status + ' ' + fmtTime(c.created_at) : 'no calls yet';
    } catch (e) {
      return 'unchecked: ' + e.message;
    }
  }
  async function loadPage(cursor) {
    const r = await api('GET', '/conversations?limit=' + PAGE + (cursor ? '&cursor=' + encodeURIComponent(cursor) : ''));
    const page = r.conversations || [];
    const lasts = await Promise.all(page.map((c) => lastCall(c.id)));
    page.forEach((c, i) => { c.last = lasts[i]; });
    return { page, next: r.more ? r.next_cursor || '' : '' };
  }
  async function refreshConversations() {
    const { page, next } = await loadPage('');
    convs = page;
    nextCursor = next;
    renderConversations();
  }
  async function moreConversations() {
    if (!nextCursor) return;
    const { page, next } = await loadPage(nextCursor);
    const seen = new Set(convs.map((c) => c.id));
    convs = convs.concat(page.filter((c) => !seen.has(c.id)));
    nextCursor = next;
    renderConversations();
  }
  function others(c) { return (c.participants || []).filter((p) => p !== me); }
  function renderConversations() {
    const list = $('#conversation-list');
    const current = list.value || sessionStorage.getItem('icebox.conversation') || '';
    list.replaceChildren(
      el('option', { value: '', text: convs.length ? 'pick one (' + convs.length + (nextCursor ? '+' : '') + ')' : '(none: an admin must create one)' }),
      ...convs.map((c) => el('option', { value: c.id, text: c.id + ' · with ' + (others(c).join(', ') || 'nobody else') + ' · last call: ' + c.last })));
    list.value = convs.some((c) => c.id === current) ? current : (convs.length === 1 ? convs[0].id : '');
    list.dataset.count = String(convs.length);
    $('#more-conversations').classList.toggle('hidden', !nextCursor);
    $('#no-conversations').classList.toggle('hidden', convs.length > 0);
    pickConversation();
  }
  // pickConversation offers the picked conversation's other participants
  // as invitees.
  function pickConversation() {
    const c = convs.find((x) => x.id === $('#conversation-list').value);
    const inv = $('#invitee');
    const was = inv.value;
    inv.replaceChildren(el('option', { value: '', text: '(anyone in it)' }), ...(c ? others(c) : []).map((p) => el('option', { value: p, text: p })));
    inv.value = c && others(c).includes(was) ? was : '';
    if (c) sessionStorage.setItem('icebox.conversation', c.id);
  }

  // --- log and state -------------------------------------------------------

  function log(msg) {
    const t = new Date();
    $('#log').prepend(el('li', {}, el('time', { text: t.toLocaleTimeString(undefined, { hour: 'numeric', minute: '2-digit', second: '2-digit', fractionalSecondDigits: 3 }) }), msg));
  }
  function setState(state, detail) {
    const s = $('#call-state');
    s.className = 'state ' + state;
    s.dataset.state = state;
    s.textContent = state + (detail ? ' (' + detail + ')' : '');
    $('#call-button').disabled = state !== 'idle' && !isOver(state);
    $('#hangup-button').disabled = !call || isOver(state);
  }
  const isOver = (s) => s === 'ended' || s === 'rejected' || s === 'expired' || s === 'failed';
  function showError(e) { $('#call-error').textContent = e ? explain(e) : ''; }

  // --- WebSocket -----------------------------------------------------------

  function setWS(state) {
    const b = $('#ws-state');
    b.textContent = state;
    b.dataset.state = state;
    $('#reconnect').classList.toggle('hidden', state !== 'closed');
  }

  function connect() {
    if (ws) ws.close();
    setWS('connecting');
    const sock = openSocket();
    ws = sock;
    sock.onopen = () => { setWS('open'); log('WebSocket connected'); };
    sock.onclose = (e) => {
      if (ws !== sock) return;
      setWS('closed');
      log('WebSocket closed (' + e.code + (e.reason ? ' ' + e.reason : '') + ')');
      for (const p of pending.values()) p.reject(new Error('WebSocket closed'));
      pending.clear();
    };
    sock.onmessage = (e) => {
      let msg;
      try { msg = JSON.parse(e.data); } catch (_) { return; }
      if (msg.type === 'reply' || msg.type === 'error') {
        const p = pending.get(msg.ref);
        if (!p) return;
        pending.delete(msg.ref);
        if (msg.type === 'reply') p.resolve(msg.result);
        else p.reject(new Icebox.APIError(msg.error.status || 400, msg.error.code, msg.error.message));
        return;
      }
      onEvent(msg).catch((err) => { log('error handling ' + msg.type + ': ' + err.message); });
    };
  }

  // command sends a command over the socket and resolves with its result.
  function command(type, fields) {
    return new Promise((resolve, reject) => {
      if (!ws || ws.readyState !== WebSocket.OPEN) { reject(new Error('the WebSocket is not connected')); return; }
      const r = String(++ref);
      pending.set(r, { resolve, reject });
      ws.send(JSON.stringify({ type, ref: r, party_id: party, ...fields }));
    });
  }

  // --- media ---------------------------------------------------------------

  async function localMedia() {
    if ($('#media').value === 'auto' && navigator.mediaDevices && window.isSecureContext) {
      try {
        const devices = await navigator.mediaDevices.enumerateDevices();
        if (devices.some((d) => d.kind === 'videoinput')) {
          const s = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
          s.stopAll = () => s.getTracks().forEach((t) => t.stop());
          log('media: camera and microphone');
          return s;
        }
      } catch (e) {
        log('media: no camera (' + e.message + '); generating');
      }
    }
    log('media: generated test pattern and tone');
    return generatedStream();
  }

  // generatedStream draws a moving test pattern on a canvas and plays a
  // quiet tone: canvas.captureStream() and a WebAudio oscillator.
  function generatedStream() {
    const canvas = el('canvas', { width: '320', height: '240' });
    const g = canvas.getContext('2d');
    let frame = 0;
    const draw = () => {
      frame++;
      g.fillStyle = 'hsl(' + (frame * 2 % 360) + ', 45%, 35%)';
      g.fillRect(0, 0, 320, 240);
      g.fillStyle = '#fff';
      g.beginPath();
      g.arc(160 + 110 * Math.cos(frame / 15), 120 + 70 * Math.sin(frame / 15), 18, 0, 2 * Math.PI);
      g.fill();
      g.font = 'bold 22px sans-serif';
      g.fillText(me || 'icebox', 12, 30);
      g.font = '16px monospace';
      g.fillText(new Date().toLocaleTimeString(), 12, 228);
    };
    draw();
    const timer = setInterval(draw, 1000 / 15);
    const stream = canvas.captureStream(15);
    let ac = null;
    try {
      ac = new AudioContext();
      const osc = ac.createOscillator();
      osc.frequency.value = 440 + Math.floor(Math.random() * 4) * 110;
      const gain = ac.createGain();
      gain.gain.value = 0.03;
      const dest = ac.createMediaStreamDestination();
      osc.connect(gain).connect(dest);
      osc.start();
      stream.addTrack(dest.stream.getAudioTracks()[0]);
    } catch (e) {
      log('media: no audio (' + e.message + ')');
    }
    stream.stopAll = () => {
      clearInterval(timer);
      stream.getTracks().forEach((t) => t.stop());
      if (ac) ac.close();
    };
    return stream;
  }

  // --- peer connection -----------------------------------------------------

  // rtcConfig: one transport for audio and video (max-bundle), so each
  // side holds one relay allocation per TURN URL, not one per track.
  function rtcConfig(iceServers) {
    return { iceServers, iceTransportPolicy: $('#relay-only').checked ? 'relay' : 'all', bundlePolicy: 'max-bundle' };
  }

  function newPeer(iceServers) {
    const p = new RTCPeerConnection(rtcConfig(iceServers));
    const remote = new MediaStream();
    $('#remote-video').srcObject = remote;
    p.ontrack = (e) => { remote.addTrack(e.track); };
    p.oniceconnectionstatechange = () => log('ICE ' + p.iceConnectionState);
    p.onconnectionstatechange = () => {
      if (p !== pc) return;
      log('connection ' + p.connectionState);
      if (p.connectionState === 'connected') setState('connected');
      if (p.connectionState === 'failed') { setState('failed', 'no media path'); showError(new Error('ICE failed: no candidate pair worked through the relay')); }
    };
    for (const t of local.getTracks()) p.addTrack(t, local);
    return p;
  }

  // trickle sends local candidates in small batches once ready() says the
  // call can take them; an end-of-candidates marker ends them.
  function trickle(p, callId, ready) {
    let batch = [];
    let timer = null;
    const flush = async () => {
      timer = null;
      if (!ready() || !batch.length) return;
      const candidates = batch.splice(0);
      try {
        await command('candidates', { call_id: callId, candidates });
      } catch (e) {
        log('sending candidates failed: ' + e.message);
      }
    };
    p.onicecandidate = (e) => {
      const c = e.candidate;
      batch.push(c && c.candidate ? { candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex } : { candidate: '' });
      if (!timer) timer = setTimeout(flush, CANDIDATE_BATCH_MS);
    };
    return () => { if (!timer) timer = setTimeout(flush, 0); };
  }

  async function addRemote(candidates) {
    for (const c of candidates) {
      if (!c.candidate) continue; // end of candidates
      try { await pc.addIceCandidate(c); } catch (e) { log('remote candidate refused: ' + e.message); }
    }
  }

  // --- placing and answering ------------------------------------------------

  async function placeCall() {
    showError(null);
    const conversation = $('#conversation-list').value;
    if (!conversation) { showError(new Error(convs.length ? 'pick a conversation' : 'you take part in no conversation: an admin must create one')); return; }
    setState('calling');
    try {
      local = await localMedia();
      $('#local-video').srcObject = local;
      // The offer is made before the call exists, but gathering starts
      // only with setLocalDescription: by then the PC has the call's own
      // TURN credentials from initiate's answer (they die with the call).
      pc = newPeer([]);
      const offer = await pc.createOffer();
      const fields = { conversation_id: conversation, sdp_offer: offer.sdp };
      if ($('#invitee').value) fields.invitee = $('#invitee').value;
      const res = await command('initiate', fields);
      call = { id: res.id, role: 'caller', status: res.status };
      $('#call-id').textContent = res.id;
      log('initiate → ' + res.status + ' (call ' + res.id + ')');
      setState(res.status);
      pc.setConfiguration(rtcConfig(res.ice_servers || []));
      trickle(pc, res.id, () => true);
      await pc.setLocalDescription(offer);
      startStats();
    } catch (e) {
      showError(e);
      log('call failed: ' + e.message);
      teardown('failed');
    }
  }

  async function answerCall() {
    const inv = incoming;
    if (!inv) return;
    incoming = null;
    $('#incoming').classList.add('hidden');
    showError(null);
    try {
      call = { id: inv.call_id, role: 'callee', status: 'ringing' };
      $('#call-id').textContent = inv.call_id;
      setState('answering');
      const ice = await api('GET', '/calls/ice_servers?call_id=' + encodeURIComponent(inv.call_id));
      local = await localMedia();
      $('#local-video').srcObject = local;
      pc = newPeer(ice.ice_servers);
      let answered = false;
      const flush = trickle(pc, inv.call_id, () => answered);
      await pc.setRemoteDescription({ type: 'offer', sdp: inv.sdp_offer });
      await addRemote(remoteQueue.get(inv.call_id) || []);
      remoteQueue.delete(inv.call_id);
      const answer = await pc.createAnswer();
      await pc.setLocalDescription(answer);
      const res = await command('answer', { call_id: inv.call_id, sdp_answer: answer.sdp });
      answered = true;
      flush();
      call.status = res.status;
      log('answer → ' + res.status);
      if (!isOver(call.status) && pc.connectionState !== 'connected') setState(res.status);
      startStats();
    } catch (e) {
      showError(e);
      log('answer failed: ' + e.message);
      teardown('failed');
    }
  }

  async function rejectCall() {
    const inv = incoming;
    incoming = null;
    $('#incoming').classList.add('hidden');
    if (!inv) return;
    try {
      await command('reject', { call_id: inv.call_id });
      log('rejected call ' + inv.call_id);
    } catch (e) { showError(e); }
  }

  async function hangup() {
    if (!call) return;
    const id = call.id;
    try {
      const res = await command('hangup', { call_id: id });
      log('hangup → ' + res.status + ' (' + (res.end_reason || '') + ')');
      if (call && call.id === id) teardown(res.status, res.end_reason);
    } catch (e) {
      showError(e);
      teardown('ended', 'local');
    }
  }

  function teardown(state, reason) {
    if (pc) { pc.close(); pc = null; }
    if (local) { local.stopAll(); local = null; }
    clearInterval(statsTimer);
    statsTimer = null;
    $('#local-video').srcObject = null;
    $('#remote-video').srcObject = null;
    setState(state, reason);
    call = null;
    refreshConversations().catch(() => {}); // its last call changed
  }

  // --- events ----------------------------------------------------------------

  async function onEvent(ev) {
    const type = ev.type.replace(/ViaMatrix$/, '');
    const ours = ev.party_id === party;
    const mine = call && ev.call_id === call.id;
    switch (type) {
      case 'CallInvite':
        if (ours) return;
        log('CallInvite from ' + ev.initiator_id + ' (call ' + ev.call_id + ')');
        if (call || (ev.invitee && ev.invitee !== me)) return; // busy, or for someone else
        if (!convs.some((c) => c.id === ev.conversation_id)) refreshConversations().catch(() => {}); // new to this page
        incoming = ev;
        $('#incoming-text').textContent = 'Incoming call from ' + ev.initiator_id + ' in ' + ev.conversation_id;
        $('#incoming').classList.remove('hidden');
        setState('ringing', 'incoming');
        return;
      case 'CallAnswer':
        if (ours || !mine) return;
        log('CallAnswer from ' + ev.participant_id + ' → ' + ev.status);
        if (call.role === 'caller') {
          call.status = ev.status;
          await pc.setRemoteDescription({ type: 'answer', sdp: ev.sdp_answer });
          await addRemote(remoteQueue.get(call.id) || []);
          remoteQueue.delete(call.id);
          if (pc.connectionState !== 'connected') setState('answered');
        } else {
          teardown('ended', 'answered elsewhere');
        }
        return;
      case 'CallCandidates': {
        if (ours) return;
        const id = ev.call_id;
        if (pc && mine && pc.remoteDescription) {
          await addRemote(ev.candidates);
        } else {
          remoteQueue.set(id, (remoteQueue.get(id) || []).concat(ev.candidates));
        }
        return;
      }
      case 'CallHangup':
      case 'CallRejected':
        log(ev.type + (ev.participant_id ? ' by ' + ev.participant_id : '') + ' → ' + ev.status + (ev.reason ? ' (' + ev.reason + ')' : ''));
        remoteQueue.delete(ev.call_id);
        if (incoming && incoming.call_id === ev.call_id) {
          incoming = null;
          $('#incoming').classList.add('hidden');
          setState(ev.status, ev.reason);
        }
        if (mine) teardown(ev.status, ev.reason);
        return;
      default:
        log(ev.type + (ev.call_id ? ' (call ' + ev.call_id + ')' : ''));
    }
  }

  // --- stats -------------------------------------------------------------------

  // summary reads getStats(): inbound RTP per kind, outbound packets, the
  // selected candidate pair.
  async function summary(p) {
    const out = { videoIn: 0, audioIn: 0, packetsOut: 0, local: null, remote: null, rtt: null };
    if (!p) return out;
    const stats = await p.getStats();
    let pair = null;
    stats.forEach((s) => {
      if (s.type === 'inbound-rtp') out[s.kind === 'video' ? 'videoIn' : 'audioIn'] += s.packetsReceived || 0;
      if (s.type === 'outbound-rtp') out.packetsOut += s.packetsSent || 0;
      if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
    });
    if (pair) {
      const l = stats.get(pair.localCandidateId), r = stats.get(pair.remoteCandidateId);
      if (l) out.local = { type: l.candidateType, address: l.address, port: l.port, protocol: l.protocol, relayProtocol: l.relayProtocol || '' };
      if (r) out.remote = { type: r.candidateType, address: r.address, port: r.port, protocol: r.protocol };
      if (pair.currentRoundTripTime !== undefined) out.rtt = pair.currentRoundTripTime;
    }
    return out;
  }

  function startStats() {
    clearInterval(statsTimer);
    statsTimer = setInterval(async () => {
      let s;
      try { s = await summary(pc); } catch (_) { return; } // closed meanwhile
      window.iceboxDemo.lastStats = s;
      $('#st-video-in').textContent = s.videoIn;
      $('#st-audio-in').textContent = s.audioIn;
      $('#st-out').textContent = s.packetsOut;
      $('#st-rtt').textContent = s.rtt === null ? '–' : (s.rtt * 1000).toFixed(1) + ' ms';
      $('#st-pair').textContent = s.local && s.remote
        ? 'selected pair: ' + s.local.type + ' ' + s.local.address + ':' + s.local.port + ' ⇄ ' + s.remote.type + ' ' + s.remote.address + ':' + s.remote.port
        : '';
    }, 1000);
  }

  // For people poking at it in the console, and for the browser tests.
  window.iceboxDemo = {
    party,
    state: () => $('#call-state').dataset.state,
    callId: () => (call ? call.id : ''),
    stats: () => summary(pc),
    lastStats: null,
  };

  // --- wiring ------------------------------------------------------------------

  $('#call-button').addEventListener('click', placeCall);
  $('#hangup-button').addEventListener('click', hangup);
  $('#answer-button').addEventListener('click', answerCall);
  $('#reject-button').addEventListener('click', rejectCall);
  $('#reconnect').addEventListener('click', connect);
  $('#conversation-list').addEventListener('change', pickConversation);
  $('#more-conversations').addEventListener('click', () => moreConversations().catch(showError));
  $('#refresh-conversations').addEventListener('click', () => refreshConversations().catch(showError));
  setState('idle');

  Icebox.signin({
    check: async () => {
      const ice = await api('GET', '/calls/ice_servers');
      const turn = (ice.ice_servers || []).find((s) => s.username);
      me = turn ? userOf(turn.username) : '';
      return me || '(no TURN credentials)';
    },
    onChange: (signedIn) => {
      $('#demo').classList.toggle('hidden', !signedIn);
      if (signedIn) { connect(); refreshConversations().catch(showError); }
      else if (ws) { const s = ws; ws = null; s.close(); setWS('closed'); }
    },
  });
})();

// The ICE test: per-URL candidate gathering, then a relay-only call between
// two RTCPeerConnections of this page through icebox, and a verdict.
'use strict';

(() => {
  const { api, explain, el, $, userOf } = Icebox;
  const CALL_TIMEOUT = 15000;
  const PINGS = 5;
  let running = false;

  // window.iceTestResult is the last run's result (also read by the browser tests).
  window.iceTestResult = null;

  function setVerdict(kind, title, detail, cause) {
    const v = $('#verdict');
    v.classList.remove('hidden', 'pass', 'fail', 'running');
    v.classList.add(kind);
    v.dataset.verdict = kind;
    v.dataset.cause = cause || '';
    $('#verdict-title').textContent = title;
    $('#verdict-detail').textContent = detail || '';
  }

  // parseCandidate reads an a=candidate line (the fields every browser fills).
  function parseCandidate(c) {
    const f = c.candidate.replace(/^candidate:/, '').split(' ');
    const typ = f.indexOf('typ');
    return {
      type: c.type || (typ > 0 ? f[typ + 1] : '?'),
      protocol: (c.protocol || f[2] || '').toLowerCase(),
      address: c.address || f[4] || '',
      port: c.port || Number(f[5]) || 0,
      relayProtocol: c.relayProtocol || '',
      url: c.url || '',
    };
  }

  // gather runs one RTCPeerConnection against one ICE server URL until
  // gathering completes or timeoutMs passes.
  function gather(server, url, timeoutMs) {
    return new Promise((resolve) => {
      const cfg = { iceServers: [{ urls: [url], username: server.username, credential: server.credential }], iceTransportPolicy: 'all' };
      const pc = new RTCPeerConnection(cfg);
      const t0 = performance.now();
      const out = { url, candidates: [], errors: [], ms: 0, complete: false };
      let timer;
      const finish = (complete) => {
        clearTimeout(timer);
        out.complete = complete;
        out.ms = Math.round(performance.now() - t0);
        pc.close();
        resolve(out);
      };
      pc.onicecandidate = (e) => {
        if (!e.candidate) { finish(true); return; }
        if (!e.candidate.candidate) return;
        const c = parseCandidate(e.candidate);
        c.ms = Math.round(performance.now() - t0);
        out.candidates.push(c);
      };
      pc.onicecandidateerror = (e) => {
        out.errors.push({ code: e.errorCode, text: e.errorText || '', url: e.url || url });
      };
      timer = setTimeout(() => finish(false), timeoutMs);
      pc.createDataChannel('gather'); // something to negotiate, so that ICE gathers
      pc.createOffer().then((o) => pc.setLocalDescription(o)).catch((err) => {
        out.errors.push({ code: 0, text: String(err), url });
        finish(false);
      });
    });
  }

  // relayCall connects two relay-only peer connections through the TURN
  // servers and measures connect time and RTT over a data channel.
  async function relayCall(turnServers) {
    const cfg = { iceServers: turnServers, iceTransportPolicy: 'relay' };
    const a = new RTCPeerConnection(cfg), b = new RTCPeerConnection(cfg);
    const res = { connected: false, connectMs: 0, rttMs: 0, iceRttMs: null, local: '', remote: '', error: '' };
    try {
      // Candidates go straight to the other side, held until it has the
      // remote description.
      for (const [from, to] of [[a, b], [b, a]]) {
        const queue = [];
        from.onicecandidate = (e) => {
          if (!e.candidate || !e.candidate.candidate) return;
          if (to.remoteDescription) to.addIceCandidate(e.candidate).catch(() => {});
          else queue.push(e.candidate);
        };
        from.flush = () => { for (const c of queue.splice(0)) to.addIceCandidate(c).catch(() => {}); };
      }
      b.ondatachannel = (e) => { e.channel.onmessage = (m) => e.channel.send(m.data); }; // echo
      const dc = a.createDataChannel('ping');
      const t0 = performance.now();
      const open = new Promise((resolve, reject) => {
        dc.onopen = resolve;
        a.onconnectionstatechange = () => { if (a.connectionState === 'failed') reject(new Error('ICE failed')); };
      });
      await a.setLocalDescription(await a.createOffer());
      await b.setRemoteDescription(a.localDescription);
      b.flush();
      await b.setLocalDescription(await b.createAnswer());
      await a.setRemoteDescription(b.localDescription);
      a.flush();
      await withTimeout(open, CALL_TIMEOUT, 'no connection within ' + CALL_TIMEOUT / 1000 + ' s');
      res.connectMs = Math.round(performance.now() - t0);
      res.connected = true;

      const rtts = [];
      for (let i = 0; i < PINGS; i++) {
        const sent = performance.now();
        const echoed = new Promise((resolve) => { dc.onmessage = resolve; });
        dc.send('ping ' + i);
        await withTimeout(echoed, 5000, 'ping ' + i + ' not echoed');
        rtts.push(performance.now() - sent);
      }
      rtts.sort((x, y) => x - y);
      res.rttMs = Math.round(rtts[Math.floor(rtts.length / 2)] * 10) / 10;

      const stats = await a.getStats();
      let pair = null;
      stats.forEach((s) => { if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId); });
      if (!pair) stats.forEach((s) => { if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s; });
      if (pair) {
        const l = stats.get(pair.localCandidateId), r = stats.get(pair.remoteCandidateId);
        res.local = l ? l.candidateType + ' ' + l.address + ':' + l.port + ' (' + (l.relayProtocol || l.protocol) + ')' : '';
        res.remote = r ? r.candidateType + ' ' + r.address + ':' + r.port : '';
        if (pair.currentRoundTripTime !== undefined) res.iceRttMs = Math.round(pair.currentRoundTripTime * 10000) / 10;
      }
    } catch (err) {
      res.error = err.message || String(err);
    } finally {
      a.close();
      b.close();
    }
    return res;
  }

  function withTimeout(p, ms, msg) {
    let t;
    return Promise.race([p, new Promise((_, reject) => { t = setTimeout(() => reject(new Error(msg)), ms); })])
      .finally(() => clearTimeout(t));
  }

  function showServer(g) {
    const types = {};
    for (const c of g.candidates) types[c.type] = (types[c.type] || 0) + 1;
    const summary = el('td');
    for (const [t, n] of Object.entries(types)) summary.append(el('span', { class: 'badge ' + t, text: n + ' ' + t }), ' ');
    if (!g.candidates.length) summary.append(el('span', { class: 'error', text: 'none' }));
    const errs = g.errors.map((e) => e.code + (e.text ? ' ' + e.text : '')).join('; ');
    $('#servers tbody').append(el('tr', { 'data-url': g.url },
      el('td', { class: 'mono', text: g.url }), summary,
      el('td', { class: 'num', text: g.ms + ' ms' + (g.complete ? '' : ' (timeout)') }),
      el('td', { class: errs ? 'error' : 'muted', text: errs || '–' })));
    for (const c of g.candidates) {
      $('#candidates tbody').append(el('tr', { 'data-type': c.type },
        el('td', { class: 'mono', text: g.url }),
        el('td', {}, el('span', { class: 'badge ' + c.type, text: c.type })),
        el('td', { class: 'mono', text: c.address + ':' + c.port }),
        el('td', { text: c.protocol + (c.relayProtocol ? ' (to TURN: ' + c.relayProtocol + ')' : '') }),
        el('td', { class: 'num', text: c.ms + ' ms' })));
    }
  }

  async function run() {
    if (running) return;
    running = true;
    $('#run').disabled = true;
    $('#servers tbody').replaceChildren();
    $('#candidates tbody').replaceChildren();
    for (const id of ['#call-connect', '#call-rtt', '#call-ice-rtt']) $(id).textContent = '–';
    $('#call-pair').textContent = '';
    const result = { verdict: '', cause: '', gathered: [], call: null };
    try {
      await test(result);
    } finally {
      window.iceTestResult = result;
      running = false;
      $('#run').disabled = false;
    }
  }

  async function test(result) {
    const fail = (cause, title, detail) => {
      result.verdict = 'fail';
      result.cause = cause;
      setVerdict('fail', 'FAIL — ' + title, detail, cause);
    };
    setVerdict('running', 'Running…', 'fetching /calls/ice_servers', 'running');
    let ice;
    try {
      ice = await api('GET', '/calls/ice_servers');
    } catch (err) {
      if (err.status === 401) {
        fail('bad_token', 'bad token', explain(err) + ' Sign out and sign in with a valid API token.');
      } else {
        fail('api_error', 'cannot get ICE servers', explain(err));
      }
      return;
    }
    const servers = ice.ice_servers || [];
    const turn = servers.filter((s) => s.urls.some((u) => /^turns?:/.test(u)));
    $('#who').textContent = turn.length ? 'as ' + userOf(turn[0].username) : '';

    const timeout = Number($('#gather-timeout').value) || 10000;
    setVerdict('running', 'Running…', 'gathering candidates against ' + servers.reduce((n, s) => n + s.urls.length, 0) + ' URLs', 'running');
    const jobs = [];
    for (const s of servers) for (const u of s.urls) jobs.push(gather(s, u, timeout));
    for (const g of await Promise.all(jobs)) {
      result.gathered.push(g);
      showServer(g);
    }
    if (!turn.length) {
      fail('no_turn', 'no TURN server', 'icebox offers no turn: URL in /calls/ice_servers; a relay-only call cannot be tried.');
      return;
    }
    const relays = result.gathered.filter((g) => /^turns?:/.test(g.url)).flatMap((g) => g.candidates.filter((c) => c.type === 'relay'));
    if (!relays.length) {
      const errs = result.gathered.flatMap((g) => g.errors);
      const refused = errs.some((e) => e.code === 401);
      fail(refused ? 'turn_auth' : 'turn_unreachable', 'no relay candidates',
        (refused ? 'The TURN server refused the credentials (401): is the secret icebox signs with the one the relay checks? '
          : 'TURN unreachable or credentials refused: no TURN URL gave a relay candidate. Check that the TURN ports are open from here and that the advertised host is right. ') +
        (errs.length ? 'Errors: ' + errs.map((e) => e.url + ' → ' + e.code + ' ' + e.text).join('; ') : ''));
      return;
    }

    setVerdict('running', 'Running…', relays.length + ' relay candidates; relay-only call between two peer connections', 'running');
    const call = await relayCall(turn);
    result.call = call;
    if (!call.connected || call.error) {
      $('#call-connect').textContent = call.connected ? call.connectMs + ' ms' : 'failed';
      fail('relay_blocked', 'relay candidates, but no connection',
        'The relay-only call did not ' + (call.connected ? 'carry data' : 'connect') + ' (' + call.error + '). ' +
        'Likely causes: the relay\'s peer policy refuses the relay addresses (turn.allowed_peers / denied_peers), or a firewall blocks the relay port range (turn.relay.min_port–max_port).');
      return;
    }
    $('#call-connect').textContent = call.connectMs + ' ms';
    $('#call-rtt').textContent = call.rttMs + ' ms';
    $('#call-ice-rtt').textContent = call.iceRttMs === null ? '–' : call.iceRttMs + ' ms';
    $('#call-pair').textContent = 'selected pair: ' + call.local + ' ⇄ ' + call.remote;
    result.verdict = 'pass';
    result.cause = '';
    setVerdict('pass', 'PASS — relay-only call through icebox',
      relays.length + ' relay candidates; connected in ' + call.connectMs + ' ms, data channel RTT ' + call.rttMs + ' ms over ' + call.local + '.', '');
  }

  // Token errors belong to the verdict (a bad token is one of its
  // answers), so signing in only stores the token and runs.
  Icebox.signin({
    check: async () => '',
    onChange: (signedIn) => { if (signedIn) run(); },
  });
  $('#run').addEventListener('click', run);
})();

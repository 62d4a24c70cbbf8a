// The status page: polls the admin API and /metrics, keeps a few minutes
// of relayed-bytes rates in memory and draws them as an SVG line chart.
'use strict';

(() => {
  const { api, text, explain, el, $, fmtBytes, fmtAge, fmtTime } = Icebox;
  const WINDOW_MS = 5 * 60 * 1000;
  const SVG = 'http://www.w3.org/2000/svg';
  let timer = null;
  let confirming = '';      // the allocation ID whose kill awaits confirmation
  let lastAllocations = [];
  let last = null;          // previous relayed byte counters {t, to_peer, from_peer}
  const series = [];        // {t, to_peer, from_peer} in bytes/s

  // parseMetrics reads Prometheus text into {name: [{labels, value}]}.
  function parseMetrics(body) {
    const out = {};
    for (const line of body.split('\n')) {
      if (!line || line[0] === '#') continue;
      const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/);
      if (!m) continue;
      const labels = {};
      if (m[2]) for (const l of m[2].slice(1, -1).matchAll(/([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
      (out[m[1]] = out[m[1]] || []).push({ labels, value: Number(m[3]) });
    }
    return out;
  }
  const sum = (m, name, pred) => (m[name] || []).filter((s) => !pred || pred(s.labels)).reduce((a, s) => a + s.value, 0);
  const has = (m, name) => Array.isArray(m[name]);

  async function poll() {
    const errors = [];
    const [allocs, calls, keyring, metrics] = await Promise.all([
      api('GET', '/admin/allocations').catch((e) => { errors.push(e); return null; }),
      api('GET', '/admin/calls').catch((e) => { errors.push(e); return null; }),
      api('GET', '/admin/keyring').catch((e) => { errors.push(e); return null; }),
      text('/metrics').then(parseMetrics).catch(() => null), // may live on another address
    ]);
    if (allocs) showAllocations(allocs.allocations || []);
    if (calls) showCalls(calls);
    if (keyring) showKeyring(keyring);
    showMetrics(metrics);
    $('#updated').textContent = fmtTime(new Date());
    $('#poll-error').textContent = errors.length ? explain(errors[0]) : '';
    document.body.dataset.polls = String(Number(document.body.dataset.polls || 0) + 1);
  }

  const fmtBits = (bps) => bps >= 1e6 ? (bps / 1e6).toFixed(1) + ' Mbit/s' : bps >= 1e3 ? Math.round(bps / 1e3) + ' kbit/s' : bps + ' bit/s';

  // killCell is the row's kill control: a button, then a confirm step
  // (Confirm / Cancel) that survives the table's refreshes.
  function killCell(a) {
    if (!a.id) return el('td', {});
    if (confirming !== a.id) {
      const b = el('button', { class: 'secondary kill', type: 'button', text: 'Kill' });
      b.addEventListener('click', () => { confirming = a.id; showAllocations(lastAllocations); });
      return el('td', {}, b);
    }
    const yes = el('button', { class: 'danger confirm-kill', type: 'button', text: 'Confirm kill' });
    const no = el('button', { class: 'secondary cancel-kill', type: 'button', text: 'Cancel' });
    yes.addEventListener('click', async () => {
      yes.disabled = true;
      try {
        await api('DELETE', '/admin/allocations/' + encodeURIComponent(a.id));
        $('#kill-error').textContent = '';
      } catch (e) {
        $('#kill-error').textContent = 'kill: ' + explain(e);
      }
      confirming = '';
      await poll();
    });
    no.addEventListener('click', () => { confirming = ''; showAllocations(lastAllocations); });
    return el('td', {}, yes, ' ', no);
  }

  function showAllocations(list) {
    lastAllocations = list;
    if (confirming && !list.some((a) => a.id === confirming)) confirming = '';
    $('#n-allocations').textContent = list.length;
    const rows = list.map((a) => el('tr', { 'data-call-id': a.call_id || '', 'data-user': a.user, 'data-id': a.id || '',
      'data-bytes-to-peer': a.bytes_to_peer, 'data-bytes-from-peer': a.bytes_from_peer },
    el('td', { text: a.user }),
    el('td', { class: 'mono', text: a.call_id || '–' }),
    el('td', { class: 'mono', text: a.client_addr ? (a.transport || a.network) + ' ' + a.client_addr : a.network }),
    el('td', { class: 'mono', text: a.relay_addr }),
    el('td', { class: 'num', text: fmtAge(a.created_at), title: 'since ' + fmtTime(a.created_at) }),
    el('td', { class: 'num', text: fmtBytes(a.bytes_to_peer) }),
    el('td', { class: 'num', text: fmtBytes(a.bytes_from_peer) }),
    el('td', { class: 'num', text: (a.packets_to_peer + a.packets_from_peer).toLocaleString() }),
    el('td', { class: 'num', text: fmtBits(a.bps_to_peer || 0) + ' / ' + fmtBits(a.bps_from_peer || 0) }),
    killCell(a)));
    $('#allocations tbody').replaceChildren(...(rows.length ? rows : [el('tr', {}, el('td', { class: 'muted', colspan: '10', text: 'no allocations' }))]));
  }

  function showCalls(c) {
    $('#n-ringing').textContent = c.by_status.ringing || 0;
    $('#n-answered').textContent = c.by_status.answered || 0;
    const rows = c.calls.map((x) => el('tr', { 'data-call-id': x.id, 'data-status': x.status, 'data-protocol': x.protocol || 'legacy' },
      el('td', { class: 'mono', text: x.id }),
      el('td', { text: x.conversation_id }),
      el('td', {}, el('span', { class: 'state ' + x.status, text: x.status })),
      el('td', { text: x.initiator }),
      el('td', { text: x.answerer || '–' }),
      el('td', { text: x.protocol || 'legacy', title: x.protocol === 'matrixrtc' ? 'bridged by the gateway to a MatrixRTC call' : 'legacy m.call.* or icebox only' }),
      el('td', { class: 'num', text: fmtAge(x.created_at), title: 'since ' + fmtTime(x.created_at) })));
    $('#calls tbody').replaceChildren(...(rows.length ? rows : [el('tr', {}, el('td', { class: 'muted', colspan: '7', text: 'no ringing or answered calls' }))]));
  }

  function showKeyring(k) {
    const retires = (key) => el('td', { text: key.retire_at ? fmtTime(key.retire_at) : '–' });
    const rows = k.keys.map((key) => el('tr', { 'data-kid': key.kid },
      el('td', { class: 'mono', text: key.kid }),
      el('td', { text: (key.kid === k.active_kid ? 'signs' : 'accepted') + (key.compat ? ', compat' : '') }),
      retires(key)));
    // The LiveKit SFU's TURN secrets (matrixrtc.livekit.turn): LiveKit
    // mints its participants' credentials with the current one.
    if (k.sfu) {
      for (const key of k.sfu.keys || []) {
        rows.push(el('tr', { 'data-kid': key.kid, 'data-sfu': key.kid === k.sfu.current_kid ? 'current' : 'accepted' },
          el('td', { class: 'mono', text: key.kid }),
          el('td', { text: key.kid === k.sfu.current_kid ? 'LiveKit TURN, current' : 'LiveKit TURN, accepted' }),
          retires(key)));
      }
    }
    $('#keyring tbody').replaceChildren(...rows);
    showLiveKit(k.livekit);
  }

  // showLiveKit shows the managed livekit-server (matrixrtc.livekit.mode:
  // managed) under the keyring: a rotation of its TURN secret restarts it.
  function showLiveKit(lk) {
    let box = document.getElementById('livekit');
    if (!lk) {
      if (box) box.remove();
      return;
    }
    if (!box) {
      box = el('div', { class: 'panel', id: 'livekit' });
      $('#keyring').after(box);
    }
    const stat = (v, k) => el('span', { class: 'stat' }, el('span', { class: 'v', text: String(v) }), el('span', { class: 'k', text: k }));
    box.dataset.up = String(lk.up);
    box.dataset.restarts = String(lk.restarts);
    box.dataset.rooms = String(lk.rooms);
    box.dataset.participants = String(lk.participants);
    box.replaceChildren(
      stat(lk.up ? 'up' : 'down', 'LiveKit'),
      stat(lk.restarts, 'restarts'),
      stat(lk.rooms, 'rooms'),
      stat(lk.participants, 'participants'));
  }

  function showMetrics(m) {
    const box = $('#matrix');
    if (!m) {
      box.replaceChildren(el('span', { class: 'muted', text: '/metrics is not served here (another address?)' }));
      $('#n-ws').textContent = '–';
      return;
    }
    $('#n-ws').textContent = sum(m, 'icebox_ws_connections');
    const now = Date.now();
    const cur = {
      t: now,
      to_peer: sum(m, 'icebox_turn_relayed_bytes_total', (l) => l.direction === 'to_peer'),
      from_peer: sum(m, 'icebox_turn_relayed_bytes_total', (l) => l.direction === 'from_peer'),
    };
    $('#relayed-total').textContent = fmtBytes(cur.to_peer + cur.from_peer);
    if (last && now > last.t) {
      const dt = (now - last.t) / 1000;
      // A restart resets the counters: count from zero then.
      const rate = (k) => Math.max(0, cur[k] >= last[k] ? cur[k] - last[k] : cur[k]) / dt;
      series.push({ t: now, to_peer: rate('to_peer'), from_peer: rate('from_peer') });
      while (series.length && series[0].t < now - WINDOW_MS) series.shift();
      const p = series[series.length - 1];
      $('#rate-now').textContent = fmtBytes(p.to_peer + p.from_peer) + '/s';
    }
    last = cur;
    drawChart();

    const parts = [];
    if (has(m, 'icebox_matrix_outbox_depth') || has(m, 'icebox_matrix_sync_lag_seconds')) {
      parts.push(el('span', { class: 'stat' }, el('span', { class: 'v', text: String(sum(m, 'icebox_matrix_outbox_depth')) }), el('span', { class: 'k', text: 'outbox depth' })));
      const lag = has(m, 'icebox_matrix_sync_lag_seconds') ? sum(m, 'icebox_matrix_sync_lag_seconds').toFixed(1) + ' s' : '–';
      parts.push(el('span', { class: 'stat' }, el('span', { class: 'v', text: lag }), el('span', { class: 'k', text: 'sync lag' })));
      parts.push(el('span', { class: 'stat' }, el('span', { class: 'v', text: String(sum(m, 'icebox_matrix_send_errors_total')) }), el('span', { class: 'k', text: 'send errors' })));
      parts.push(el('span', { class: 'stat' }, el('span', { class: 'v', text: String(sum(m, 'icebox_matrix_sync_errors_total')) }), el('span', { class: 'k', text: 'sync errors' })));
      box.dataset.matrix = 'on';
    } else {
      parts.push(el('span', { class: 'muted', text: 'The Matrix bridge is off (matrix.enabled).' }));
      box.dataset.matrix = 'off';
    }
    box.replaceChildren(...parts);
  }

  function svg(tag, attrs) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    return e;
  }

  function drawChart() {
    const chart = $('#chart');
    // Drawn in the chart's own pixels (not a stretched fixed viewBox), so
    // labels stay legible on a phone.
    const W = Math.round(chart.clientWidth) || 1000, H = Math.round(chart.clientHeight) || 220, L = 70, B = 20, T = 10;
    chart.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
    const now = Date.now();
    const minutes = WINDOW_MS / 60000;
    $('#window').textContent = '(' + fmtTime(new Date(now - WINDOW_MS)) + '–' + fmtTime(new Date(now)) + ')';
    chart.setAttribute('aria-label', 'relayed bytes per second, last ' + minutes + ' minutes');
    chart.dataset.windowMinutes = String(minutes);
    const max = Math.max(1024, ...series.map((p) => Math.max(p.to_peer, p.from_peer)));
    const x = (t) => L + (W - L - 5) * (1 - (now - t) / WINDOW_MS);
    const y = (v) => H - B - (H - B - T) * (v / max);
    const nodes = [];
    for (const f of [0, 0.5, 1]) {
      nodes.push(svg('line', { class: 'axis', x1: L, x2: W, y1: y(max * f), y2: y(max * f) }));
      const label = svg('text', { x: 4, y: y(max * f) + 4 });
      label.textContent = fmtBytes(max * f) + '/s';
      nodes.push(label);
    }
    // Minute marks, every other one when the chart is narrow.
    const step = W < 600 ? 2 : 1;
    for (let min = minutes; min >= 1; min -= step) {
      if (x(now - min * 60000) > W - 70) continue; // "now" is there
      const label = svg('text', { x: x(now - min * 60000), y: H - 4 });
      label.textContent = '−' + min + ' min';
      nodes.push(label);
    }
    const nowLabel = svg('text', { x: W - 5, y: H - 4, 'text-anchor': 'end' });
    nowLabel.textContent = 'now';
    nodes.push(nowLabel);
    for (const k of ['to_peer', 'from_peer']) {
      if (series.length < 2) break;
      const pts = series.map((p) => x(p.t).toFixed(1) + ',' + y(p[k]).toFixed(1)).join(' ');
      nodes.push(svg('polyline', { class: k, points: pts }));
    }
    chart.replaceChildren(...nodes);
    chart.dataset.points = String(series.length);
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      await poll();
      schedule();
    }, Number($('#interval').value) || 2000);
  }

  Icebox.signin({
    // An admin token opens /admin/keyring; a user token gets 403 there.
    check: async () => {
      try {
        await api('GET', '/admin/keyring');
      } catch (e) {
        if (e.status !== 404) throw e; // 404: no keyring administration, but an admin
      }
      return '(admin)';
    },
    onChange: async (signedIn) => {
      clearTimeout(timer);
      $('#dashboard').classList.toggle('hidden', !signedIn);
      if (!signedIn) return;
      await poll();
      schedule();
    },
  });
  $('#interval').addEventListener('change', schedule);
})();

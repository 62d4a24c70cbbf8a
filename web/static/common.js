// Shared by every page: the API token (sessionStorage, this tab only), API
// requests with it, the WebSocket URL, small DOM helpers. No framework.
'use strict';

const Icebox = (() => {
  const TOKEN_KEY = 'icebox.token';

  // The API lives beside /ui/ on this origin; keep a reverse proxy's path
  // prefix ("/icebox/ui/call" → "/icebox").
  const base = (() => {
    const i = location.pathname.indexOf('/ui/');
    return i > 0 ? location.pathname.slice(0, i) : '';
  })();

  function token() { return sessionStorage.getItem(TOKEN_KEY) || ''; }
  function setToken(t) {
    if (t) sessionStorage.setItem(TOKEN_KEY, t); else sessionStorage.removeItem(TOKEN_KEY);
  }

  // APIError carries the HTTP status and icebox's error code.
  class APIError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  // api sends a request with the token and returns the decoded JSON body
  // (null for 204); a non-2xx answer throws an APIError.
  async function api(method, path, body) {
    const headers = { Accept: 'application/json' };
    if (token()) headers.Authorization = 'Bearer ' + token();
    const init = { method, headers, cache: 'no-store' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch(base + path, init);
    } catch (e) {
      throw new APIError(0, 'network', 'cannot reach icebox: ' + e.message);
    }
    return decode(resp);
  }

  async function decode(resp) {
    const text = await resp.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
    if (!resp.ok) {
      const e = (data && data.error) || {};
      throw new APIError(resp.status, e.code || 'http_' + resp.status, e.message || resp.statusText || 'HTTP ' + resp.status);
    }
    return data;
  }

  // text fetches a non-JSON resource (Prometheus /metrics).
  async function text(path) {
    const headers = {};
    if (token()) headers.Authorization = 'Bearer ' + token();
    const resp = await fetch(base + path, { headers, cache: 'no-store' });
    if (!resp.ok) throw new APIError(resp.status, 'http_' + resp.status, 'HTTP ' + resp.status);
    return resp.text();
  }

  // explain turns an API error into a sentence for people.
  function explain(err) {
    if (!(err instanceof APIError)) return String(err && err.message || err);
    switch (err.status) {
      case 401: return 'icebox refused the token (401 ' + err.code + '): check the token you signed in with.';
      case 403: return 'not allowed (403 ' + err.code + '): ' + err.message;
      case 0: return err.message;
      default: return err.message + ' (' + err.status + ' ' + err.code + ')';
    }
  }

  // wsURL is this origin's /ws; the token goes in the "bearer.<token>"
  // subprotocol (browsers cannot set headers on a WebSocket).
  function wsURL() {
    return (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + base + '/ws';
  }
  function openSocket() { return new WebSocket(wsURL(), ['bearer.' + token()]); }

  // userOf reads the user out of a TURN REST username ("expiry[.kid]:[call-ID:]user").
  function userOf(username) {
    if (!username) return '';
    let rest = username.slice(username.indexOf(':') + 1);
    if (rest.startsWith('call-')) rest = rest.slice(rest.indexOf(':') + 1);
    return rest;
  }

  // el builds an element: el('td', {class: 'num', text: '3'}, child…).
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null) continue;
      if (k === 'text') e.textContent = v;
      else if (k === 'class') e.className = v;
      else if (k.startsWith('data-')) e.dataset[k.slice(5).replace(/-([a-z])/g, (_, c) => c.toUpperCase())] = v;
      else e.setAttribute(k, v);
    }
    for (const c of children) e.append(c);
    return e;
  }
  const $ = (sel) => document.querySelector(sel);

  function fmtBytes(n) {
    if (!isFinite(n)) return '–';
    const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : String(Math.round(n))) + ' ' + u[i];
  }
  function fmtAge(iso) {
    const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
    if (s < 120) return s + ' s';
    if (s < 7200) return Math.round(s / 60) + ' min';
    return (s / 3600).toFixed(1) + ' h';
  }

  // signin wires the page's sign-in box: #signin-form (#token), #signed-in
  // (#who, #signout), #signin-error. check(token) validates a token and
  // returns who it stands for, or throws; onChange(signedIn) follows.
  function signin({ check, onChange }) {
    const form = $('#signin-form'), out = $('#signed-in'), errBox = $('#signin-error');
    async function apply() {
      errBox.textContent = '';
      if (!token()) {
        form.classList.remove('hidden');
        out.classList.add('hidden');
        onChange(false);
        return;
      }
      try {
        $('#who').textContent = (await check()) || '';
      } catch (e) {
        setToken('');
        form.classList.remove('hidden');
        out.classList.add('hidden');
        errBox.textContent = explain(e);
        errBox.dataset.code = e.code || '';
        onChange(false, e);
        return;
      }
      form.classList.add('hidden');
      out.classList.remove('hidden');
      onChange(true);
    }
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      setToken($('#token').value.trim());
      $('#token').value = '';
      apply();
    });
    $('#signout').addEventListener('click', () => { setToken(''); apply(); });
    apply();
  }

  // fmtTime is a moment in the reader's own time zone and locale
  // ("14:03:07"), with the date too when it is not today.
  function fmtTime(when) {
    const d = when instanceof Date ? when : new Date(when);
    if (isNaN(d)) return '–';
    const today = new Date().toDateString() === d.toDateString();
    return today ? d.toLocaleTimeString() : d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
  }

  // stackTables labels every body cell with its column's name (data-label,
  // from the table head) whenever the rows change, so that on a narrow
  // screen style.css can show each row as a card of "name value" lines.
  function stackTables() {
    for (const table of document.querySelectorAll('table')) {
      const names = Array.from(table.querySelectorAll('thead th'), (th) => th.textContent.trim());
      const label = () => {
        for (const tr of table.tBodies[0] ? table.tBodies[0].rows : []) {
          Array.from(tr.cells).forEach((td, i) => {
            if (td.colSpan > 1) return;
            if (names[i] && td.dataset.label !== names[i]) td.dataset.label = names[i];
          });
        }
      };
      table.classList.add('stack');
      label();
      if (table.tBodies[0]) new MutationObserver(label).observe(table.tBodies[0], { childList: true });
    }
  }
  stackTables();

  return { api, text, explain, APIError, openSocket, userOf, el, $, fmtBytes, fmtAge, fmtTime, token, setToken, signin };
})();

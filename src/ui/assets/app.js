// The dashboard: takes the token, connects, loads the picture, then follows pushed events.
//
// The token arrives in the URL fragment (`/ui#token=...`, which browsers never send to a
// server) or through the form. It is moved to sessionStorage (this tab only) and the
// fragment is cleared from the address bar at once, so it is not left in the history
// or in a screenshot of the address bar. It goes to the gateway only inside the
// WebSocket `connect` frame.
//
// After hello-ok: `sessions.list` (and `device.pair.list` with operator.pairing), then
// only events: `agent` updates the tree, `sessions.changed` or an event about an unknown
// session (the live view lost events) reloads the list, `device.pair.*` reloads pairing.
// Nothing polls.

import { Gateway } from './gateway.js';
import { Tree } from './tree.js';
import { renderMeta, renderTranscript, historyParams, renderPairing } from './panels.js';
import { formatTokens, formatCost } from './util.js';

const TOKEN_KEY = 'hivegate.token';
const $ = (id) => document.getElementById(id);

const state = { gw: null, scopes: [], tree: null, reloading: false, reloadAgain: false, timers: {} };

function takeToken() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const fromUrl = fragment.get('token');
  if (fromUrl !== null) {
    if (fromUrl) sessionStorage.setItem(TOKEN_KEY, fromUrl);
    history.replaceState(null, '', location.pathname + location.search);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

function has(scope) {
  return state.scopes.includes(scope) || state.scopes.includes('operator.admin');
}
const canRead = () => has('operator.read') || has('operator.write');
const canWrite = () => has('operator.write');

function showError(text) {
  const box = $('error');
  box.textContent = text || '';
  box.hidden = !text;
}

function notice(text, isError) {
  const box = $('notice');
  box.textContent = text;
  box.classList.toggle('bad', Boolean(isError));
  box.hidden = false;
  clearTimeout(state.timers.notice);
  state.timers.notice = setTimeout(() => (box.hidden = true), 6000);
}

function setConn(kind, text) {
  const conn = $('conn');
  conn.dataset.state = kind;
  conn.textContent = text;
}

function wsUrl() {
  return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/`;
}

function connect(token) {
  if (state.gw) state.gw.stop();
  showError('');
  $('login').hidden = true;
  $('forget').hidden = false;
  state.gw = new Gateway(wsUrl(), token, {
    onState: (kind, text) => setConn(kind, text),
    onReady: ready,
    onEvent: event,
    onGap: () => reload(),
    onRefused: refused,
  });
  state.gw.start();
}

function refused(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  setConn('refused', 'refused');
  showError(`The gateway refused the dashboard: ${message}. Check the token (\`hivegate dashboard\` prints a working link).`);
  $('main').hidden = true;
  $('login').hidden = false;
  state.tree.load([]);
}

function ready(hello) {
  state.scopes = (hello.auth && hello.auth.scopes) || [];
  if (!canRead()) {
    state.gw.stop();
    setConn('refused', 'no access');
    showError(
      'Connected, but the gateway gave this page no operator scopes. The dashboard needs the gateway token ' +
        'on a direct loopback connection: open it on the gateway\'s machine (or through ssh -L).',
    );
    return;
  }
  const scopes = state.scopes.map((s) => s.replace('operator.', '')).join(', ');
  setConn('ready', `connected (${scopes})`);
  showError('');
  $('main').hidden = false;
  $('pairing').hidden = !has('operator.pairing');
  $('detail-actions').hidden = !canWrite();
  state.tree.refreshAll();
  reload();
  if (has('operator.pairing')) reloadPairing();
}

function event(name, payload) {
  if (name === 'agent') {
    if (!state.tree.agentEvent(payload)) reload();
    else if (payload.sessionKey === state.tree.selected) detailChanged(payload);
  } else if (name === 'sessions.changed') {
    reload();
  } else if (name.startsWith('device.pair.')) {
    reloadPairing();
  }
}

// One `sessions.list` at a time; asks made meanwhile fold into one more.
async function reload() {
  if (state.reloading) {
    state.reloadAgain = true;
    return;
  }
  state.reloading = true;
  try {
    const list = await state.gw.request('sessions.list', {});
    state.tree.load(list.sessions || []);
    window.hivegate.stats.reloads += 1;
  } catch (e) {
    if (state.gw.ready) notice(`cannot load sessions: ${e.message}`, true);
  } finally {
    state.reloading = false;
    if (state.reloadAgain) {
      state.reloadAgain = false;
      reload();
    }
  }
}

async function reloadPairing() {
  clearTimeout(state.timers.pairing);
  state.timers.pairing = setTimeout(async () => {
    try {
      const list = await state.gw.request('device.pair.list', {});
      renderPairing($('pending'), $('devices'), list);
    } catch (e) {
      if (state.gw.ready) notice(`cannot load pairing: ${e.message}`, true);
    }
  }, 50);
}

function renderTotals() {
  const t = state.tree.totals();
  const parts = [];
  for (const name of ['running', 'done', 'failed', 'timeout', 'killed']) if (t[name]) parts.push(`${t[name]} ${name}`);
  parts.push(`${formatTokens(t.tokens)} tokens`);
  if (t.costKnown) parts.push(formatCost(t.cost));
  $('totals').textContent = parts.join(' · ');
  $('empty').hidden = state.tree.sessions.size > 0;
  const selected = state.tree.selected && state.tree.get(state.tree.selected);
  if (selected) {
    renderMeta($('detail-meta'), selected);
    $('detail-kill').hidden = !(canWrite() && selected.status === 'running');
  }
}

function select(key) {
  state.tree.select(key);
  const s = state.tree.get(key);
  if (!s) return;
  $('detail').hidden = false;
  $('detail-title').textContent = s.label || s.key;
  renderMeta($('detail-meta'), s);
  $('detail-kill').hidden = !(canWrite() && s.status === 'running');
  $('transcript').replaceChildren();
  loadHistory(key);
}

async function loadHistory(key) {
  try {
    const history = await state.gw.request('chat.history', historyParams(key));
    if (state.tree.selected === key) renderTranscript($('transcript'), history);
  } catch (e) {
    if (state.tree.selected === key) $('transcript').textContent = `cannot load the transcript: ${e.message}`;
  }
}

// The selected session moved on: reload its transcript after a tool call or its end.
function detailChanged(p) {
  const d = p.data || {};
  if ((p.stream === 'item' && d.phase === 'end') || (p.stream === 'lifecycle' && d.phase === 'end')) {
    clearTimeout(state.timers.history);
    state.timers.history = setTimeout(() => loadHistory(p.sessionKey), 300);
  }
}

// Kill asks once more on the button itself: a second click within 4 s kills.
async function kill(key, button) {
  if (!button.classList.contains('armed')) {
    button.classList.add('armed');
    button.textContent = 'Kill tree?';
    setTimeout(() => {
      button.classList.remove('armed');
      button.textContent = 'Kill';
    }, 4000);
    return;
  }
  button.classList.remove('armed');
  button.textContent = 'Kill';
  button.disabled = true;
  try {
    const result = await state.gw.request('sessions.abort', { key });
    const s = state.tree.get(key);
    const name = (s && s.label) || key;
    notice(result.abortedRunId ? `killed ${name} and its subtree` : `${name} has no running run`);
  } catch (e) {
    notice(`kill failed: ${e.message}`, true);
  } finally {
    button.disabled = false;
  }
}

async function steer(e) {
  e.preventDefault();
  const key = state.tree.selected;
  const input = $('steer-text');
  const message = input.value.trim();
  if (!key || !message) return;
  try {
    const result = await state.gw.request('sessions.steer', { key, message });
    input.value = '';
    const s = state.tree.get(key);
    notice(`steered ${(s && s.label) || key}: ${result.status}`);
  } catch (err) {
    notice(`steer failed: ${err.message}`, true);
  }
}

async function decide(e) {
  const b = e.target.closest('button[data-request-id]');
  if (!b) return;
  const method = b.classList.contains('approve') ? 'device.pair.approve' : 'device.pair.reject';
  b.disabled = true;
  try {
    await state.gw.request(method, { requestId: b.dataset.requestId });
    notice(`${method === 'device.pair.approve' ? 'approved' : 'rejected'} request ${b.dataset.requestId}`);
  } catch (err) {
    notice(`${method} failed: ${err.message}`, true);
  } finally {
    b.disabled = false;
    reloadPairing();
  }
}

function start() {
  window.hivegate = { stats: { reloads: 0 } };
  state.tree = new Tree($('tree'), {
    onSelect: select,
    onKill: kill,
    canWrite,
    onChange: renderTotals,
  });
  Object.assign(window.hivegate.stats, { tree: state.tree.stats });
  $('login').addEventListener('submit', (e) => {
    e.preventDefault();
    const token = $('token').value.trim();
    if (!token) return;
    $('token').value = '';
    sessionStorage.setItem(TOKEN_KEY, token);
    connect(token);
  });
  $('forget').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    location.reload();
  });
  $('hide-ended').addEventListener('change', (e) => $('tree').classList.toggle('hide-ended', e.target.checked));
  $('detail-close').addEventListener('click', () => {
    state.tree.select(null);
    $('detail').hidden = true;
  });
  $('detail-kill').addEventListener('click', (e) => state.tree.selected && kill(state.tree.selected, e.currentTarget));
  $('steer').addEventListener('submit', steer);
  $('pairing').addEventListener('click', decide);
  window.addEventListener('hashchange', () => {
    const token = takeToken();
    if (token) connect(token);
  });
  const token = takeToken();
  if (token) connect(token);
  else {
    setConn('idle', 'not connected');
    $('login').hidden = false;
  }
}

start();

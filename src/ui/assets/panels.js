// The side panels: one session's details and transcript (`chat.history`), and pairing
// (`device.pair.list`, with approve and reject). Both are small, so each render replaces
// its panel's contents; text goes in through textContent only.

import { el, setText, formatElapsed, formatTokens, formatCost, formatTime, ago } from './util.js';

const HISTORY_LIMIT = 200;
const TEXT_LIMIT = 4000;

export function renderMeta(dl, s) {
  const ended = s.endedAt || Date.now();
  const rows = [
    ['Session', s.key],
    ['Agent', s.agentId],
    ['Label', s.label],
    ['Model', s.model ? `${s.provider}/${s.model}` : ''],
    ['Runs on', s.placement],
    ['Status', s.status],
    ['Why', s.reason],
    ['Run', s.runId],
    ['Parent', s.parent],
    ['Started', formatTime(s.startedAt)],
    ['Elapsed', s.startedAt ? formatElapsed(Math.max(0, ended - s.startedAt), !s.endedAt) : ''],
    ['Tokens', `${formatTokens(s.tokens)} (in ${formatTokens(s.inputTokens)}, out ${formatTokens(s.outputTokens)})`],
    ['Cost', formatCost(s.cost)],
  ];
  const nodes = [];
  for (const [name, value] of rows) {
    if (value === null || value === undefined || value === '') continue;
    const dt = el('dt');
    dt.textContent = name;
    const dd = el('dd');
    dd.textContent = String(value);
    if (name === 'Why') dd.className = 'why';
    nodes.push(dt, dd);
  }
  dl.replaceChildren(...nodes);
}

function clip(text) {
  return text.length > TEXT_LIMIT ? `${text.slice(0, TEXT_LIMIT)} … (${text.length - TEXT_LIMIT} more characters)` : text;
}

// One transcript message's parts as text lines.
function parts(message) {
  const content = message.content;
  if (typeof content === 'string') return [clip(content)];
  if (!Array.isArray(content)) return [JSON.stringify(content)];
  return content.map((part) => {
    if (part.type === 'text') return clip(part.text || '');
    if (part.type === 'toolCall') return clip(`→ ${part.name}(${JSON.stringify(part.arguments)})`);
    return clip(JSON.stringify(part));
  });
}

export function renderTranscript(box, history) {
  const messages = (history && history.messages) || [];
  const nodes = [];
  if (history && history.hasMore) {
    const more = el('p', { className: 'hint' });
    more.textContent = `showing the last ${messages.length} of ${history.totalMessages} messages`;
    nodes.push(more);
  }
  for (const message of messages) {
    const item = el('div', { className: `msg msg-${message.role}` });
    const role = el('div', { className: 'role' });
    role.textContent = message.role === 'toolResult' ? 'tool result' : message.role;
    item.append(role);
    for (const text of parts(message)) {
      const body = el('pre');
      body.textContent = text;
      item.append(body);
    }
    nodes.push(item);
  }
  if (!messages.length) {
    const none = el('p', { className: 'hint' });
    none.textContent = 'no messages yet';
    nodes.push(none);
  }
  box.replaceChildren(...nodes);
}

export function historyParams(key) {
  return { sessionKey: key, limit: HISTORY_LIMIT };
}

function line(...texts) {
  const span = el('span');
  span.textContent = texts.filter(Boolean).join(' · ');
  return span;
}

function button(text, className, data) {
  const b = el('button', { type: 'button', className });
  b.textContent = text;
  for (const [k, v] of Object.entries(data)) b.dataset[k] = v;
  return b;
}

// `device.pair.list`: pending requests with approve/reject, then paired devices.
export function renderPairing(pendingList, deviceList, list) {
  const pending = (list.pending || []).slice().sort((a, b) => b.ts - a.ts);
  const pendingNodes = pending.map((r) => {
    const li = el('li');
    li.dataset.requestId = r.requestId;
    const who = r.displayName || r.clientId || r.deviceId.slice(0, 12);
    const title = el('strong');
    title.textContent = who;
    const scopes = (r.scopes || []).join(', ') || 'no scopes';
    li.append(title, line(r.role, scopes, r.platform, r.remoteIp, r.isRepair ? 'upgrade' : 'new', ago(r.ts)));
    const actions = el('span', { className: 'actions' });
    actions.append(
      button('Approve', 'approve', { requestId: r.requestId }),
      button('Reject', 'reject danger', { requestId: r.requestId }),
    );
    li.append(actions);
    return li;
  });
  if (!pendingNodes.length) pendingNodes.push(empty('no pending requests'));
  pendingList.replaceChildren(...pendingNodes);
  const devices = (list.paired || []).map((d) => {
    const li = el('li');
    const title = el('strong');
    title.textContent = d.displayName || d.clientId || d.deviceId.slice(0, 12);
    const roles = (d.roles && d.roles.length ? d.roles : [d.role]).filter(Boolean).join(', ');
    const state = d.connected ? 'connected' : d.lastSeenAtMs ? `seen ${ago(d.lastSeenAtMs)}` : '';
    li.append(title, line(roles, (d.scopes || []).join(', '), d.platform, state, d.deviceId.slice(0, 12)));
    return li;
  });
  if (!devices.length) devices.push(empty('no paired devices'));
  deviceList.replaceChildren(...devices);
}

function empty(text) {
  const li = el('li', { className: 'hint' });
  li.textContent = text;
  return li;
}

export { setText };

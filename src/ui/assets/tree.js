// The session tree: a model (sessions by key) fed by `sessions.list` rows and live
// `agent` events, and its DOM, kept in step without ever being rebuilt.
//
// Every change marks its session dirty; one flush per animation frame updates the
// dirty rows in place (a cell is written only when its text changed) within a time
// budget, so a burst of a thousand events costs a few frames, never a long freeze. A row is an <li> keyed by session key, holding
// its children's <ul>; a child whose parent is not known yet waits at the top level and
// moves under its parent when that appears. Roots are newest first, children in start
// order. All text goes in through textContent.

import { el, setText, formatElapsed, formatTokens, formatCost } from './util.js';

const ENDED = { stop: 'done', error: 'failed', timeout: 'timeout', rpc: 'killed' };
const FRAME_BUDGET_MS = 8;

// A sessions.list row's status, as this tree names them.
function rowStatus(row) {
  return ['running', 'done', 'failed', 'timeout', 'killed'].includes(row.status) ? row.status : 'done';
}

export class Tree {
  // hooks: onSelect(key), onKill(key), canWrite(), onChange()
  constructor(container, hooks) {
    this.root = container;
    this.hooks = hooks;
    this.sessions = new Map();
    this.views = new Map();
    this.waiting = new Map(); // parent key -> Set of child keys placed at the top level
    this.dirty = new Set();
    this.scheduled = false;
    this.selected = null;
    this.stats = { events: 0, flushes: 0, rows: 0, lastFlushMs: 0, maxFlushMs: 0, lastEventAt: 0, lastFlushAt: 0 };
    container.addEventListener('click', (e) => this.click(e));
    setInterval(() => this.tick(), 1000);
  }

  // Replace the picture with a full `sessions.list` answer. Rows the list no longer has
  // go; a live event newer than the list (an end the list has not seen) is kept.
  load(rows) {
    const seen = new Set();
    for (const row of rows) {
      seen.add(row.sessionKey);
      this.merge(row);
    }
    for (const key of [...this.sessions.keys()]) if (!seen.has(key)) this.remove(key);
    this.schedule();
  }

  merge(row) {
    const key = row.sessionKey;
    const old = this.sessions.get(key);
    const status = rowStatus(row);
    if (old && old.runId === row.runId && old.status !== 'running' && status === 'running') return;
    const s = old || { key };
    s.agentId = row.agentId;
    s.label = row.label || null;
    s.provider = row.modelProvider;
    s.model = row.model;
    s.parent = row.parent || null;
    s.status = status;
    s.runId = row.runId;
    s.startedAt = row.startedAtMs;
    s.endedAt = row.endedAtMs || null;
    s.tokens = row.totalTokens || 0;
    s.inputTokens = row.inputTokens || 0;
    s.outputTokens = row.outputTokens || 0;
    s.cost = row.estimatedCostUsd ?? null;
    s.reason = status === 'done' || status === 'running' ? null : row.summary || null;
    s.depth = row.depth || 0;
    s.placement = row.placement || 'local';
    if (!old) s.tool = null;
    this.sessions.set(key, s);
    this.dirty.add(key);
  }

  // An `agent` event. Returns false when it is about a session this tree does not know
  // (its start was missed): the caller reloads the list.
  agentEvent(p) {
    this.stats.events += 1;
    this.stats.lastEventAt = Date.now();
    const d = p.data || {};
    let s = this.sessions.get(p.sessionKey);
    if (p.stream === 'lifecycle' && d.phase === 'start') {
      s = s || { key: p.sessionKey, depth: 0 };
      Object.assign(s, {
        runId: p.runId, agentId: p.agentId, parent: p.spawnedBy || s.parent || null, status: 'running',
        startedAt: d.startedAt || p.ts, endedAt: null, tokens: 0, inputTokens: 0, outputTokens: 0, cost: null,
        reason: null, tool: null,
      });
      if (d.label) s.label = d.label;
      this.sessions.set(p.sessionKey, s);
    } else if (!s) {
      return false;
    } else if (p.stream === 'lifecycle' && d.phase === 'model') {
      s.provider = d.provider;
      s.model = d.model;
    } else if (p.stream === 'lifecycle' && d.phase === 'end') {
      s.status = d.aborted ? 'killed' : ENDED[d.stopReason] || 'done';
      s.endedAt = d.endedAt || p.ts;
      s.reason = s.status === 'done' ? null : d.error || d.stopReason || null;
      s.tool = null;
    } else if (p.stream === 'usage') {
      s.tokens = d.totalTokens || 0;
      s.inputTokens = d.inputTokens || 0;
      s.outputTokens = d.outputTokens || 0;
      if (d.costUsd !== undefined && d.costUsd !== null) s.cost = d.costUsd;
    } else if (p.stream === 'item') {
      s.tool = d.phase === 'start' ? d.name : null;
    } else {
      return true;
    }
    this.dirty.add(p.sessionKey);
    this.schedule();
    return true;
  }

  get(key) {
    return this.sessions.get(key);
  }

  select(key) {
    const before = this.selected && this.views.get(this.selected);
    if (before) before.row.classList.remove('selected');
    this.selected = key;
    const view = key && this.views.get(key);
    if (view) view.row.classList.add('selected');
  }

  // The elapsed time of running sessions moves on by itself.
  tick() {
    let any = false;
    for (const s of this.sessions.values()) {
      if (s.status === 'running') {
        this.dirty.add(s.key);
        any = true;
      }
    }
    if (any) this.schedule();
  }

  schedule() {
    if (this.scheduled) return;
    this.scheduled = true;
    // A hidden tab gets no animation frames; it still keeps up, less often.
    if (document.hidden) setTimeout(() => this.flush(), 250);
    else requestAnimationFrame(() => this.flush());
  }

  // Render dirty rows for at most FRAME_BUDGET_MS, then leave the rest to the next
  // frame, so a burst of new rows never holds the page for long.
  flush() {
    this.scheduled = false;
    const started = performance.now();
    const now = Date.now();
    const canWrite = this.hooks.canWrite();
    for (const key of this.dirty) {
      this.dirty.delete(key);
      const s = this.sessions.get(key);
      if (s) this.render(s, now, canWrite);
      if (performance.now() - started > FRAME_BUDGET_MS) break;
    }
    if (this.dirty.size) this.schedule();
    this.hooks.onChange();
    const took = performance.now() - started;
    this.stats.flushes += 1;
    this.stats.rows = this.views.size;
    this.stats.lastFlushMs = took;
    this.stats.lastFlushAt = Date.now();
    this.stats.maxFlushMs = Math.max(this.stats.maxFlushMs, took);
  }

  // Mark every row dirty (scopes changed: the Kill buttons come or go).
  refreshAll() {
    for (const key of this.sessions.keys()) this.dirty.add(key);
    this.schedule();
  }

  render(s, now, canWrite) {
    const v = this.views.get(s.key) || this.create(s);
    const ended = s.endedAt || now;
    if (v.li.dataset.status !== s.status) v.li.dataset.status = s.status;
    setText(v.label, s.label || s.key.split(':').slice(-1)[0]);
    setText(v.agent, s.agentId || '');
    setText(v.model, s.model ? `${s.provider}/${s.model}` : '');
    setText(v.status, s.status);
    setText(v.tool, s.status === 'running' && s.tool ? s.tool : '');
    setText(v.elapsed, s.startedAt ? formatElapsed(Math.max(0, ended - s.startedAt), !s.endedAt) : '');
    setText(v.tokens, formatTokens(s.tokens));
    setText(v.cost, formatCost(s.cost));
    setText(v.reason, s.reason || '');
    v.reason.hidden = !s.reason;
    v.kill.hidden = !(canWrite && s.status === 'running');
  }

  create(s) {
    const li = el('li', { role: 'treeitem' });
    li.dataset.key = s.key;
    const row = el('div', { className: 'cols row' });
    row.title = s.key;
    const name = el('span', { className: 'name' });
    const caret = el('button', { className: 'caret', type: 'button', ariaLabel: 'collapse' });
    caret.textContent = '▾';
    const label = el('span', { className: 'label' });
    const tool = el('span', { className: 'tool' });
    name.append(caret, el('span', { className: 'dot' }), label, tool);
    const agent = el('span', { className: 'agent' });
    const model = el('span', { className: 'model c-model' });
    const status = el('span', { className: 'status' });
    const elapsed = el('span', { className: 'num' });
    const tokens = el('span', { className: 'num' });
    const cost = el('span', { className: 'num c-cost' });
    const actions = el('span', { className: 'row-actions' });
    const kill = el('button', { className: 'kill danger', type: 'button' });
    kill.textContent = 'Kill';
    kill.hidden = true;
    actions.append(kill);
    const reason = el('div', { className: 'reason' });
    reason.hidden = true;
    row.append(name, agent, model, status, elapsed, tokens, cost, actions, reason);
    const children = el('ul', { role: 'group' });
    li.append(row, children);
    const view = { li, row, label, tool, agent, model, status, elapsed, tokens, cost, kill, reason, children };
    this.views.set(s.key, view);
    this.place(s, view);
    this.adopt(s.key, view);
    if (s.key === this.selected) row.classList.add('selected');
    return view;
  }

  // Under its parent in start order, or at the top, newest first.
  place(s, view) {
    const parent = s.parent && this.views.get(s.parent);
    if (parent) {
      this.insert(parent.children, view.li, s.startedAt || 0, false);
      parent.li.classList.add('parent');
      return;
    }
    if (s.parent) {
      if (!this.waiting.has(s.parent)) this.waiting.set(s.parent, new Set());
      this.waiting.get(s.parent).add(s.key);
    }
    this.insert(this.root, view.li, s.startedAt || 0, true);
  }

  // Insert `li` (started at `start`) into `list`, ordered by start: oldest first, or
  // newest first. New sessions are the newest, so the usual case is one comparison.
  insert(list, li, start, newestFirst) {
    const edge = newestFirst ? list.firstElementChild : list.lastElementChild;
    if (!edge || edge === li) {
      list.append(li);
      return;
    }
    if (newestFirst && this.startOf(edge) <= start) {
      list.prepend(li);
      return;
    }
    if (!newestFirst && this.startOf(edge) <= start) {
      list.append(li);
      return;
    }
    for (const child of list.children) {
      const other = this.startOf(child);
      if (child !== li && (newestFirst ? other < start : other > start)) {
        list.insertBefore(li, child);
        return;
      }
    }
    list.append(li);
  }

  adopt(key, view) {
    const orphans = this.waiting.get(key);
    if (!orphans) return;
    this.waiting.delete(key);
    for (const child of orphans) {
      const cv = this.views.get(child);
      const cs = this.sessions.get(child);
      if (!cv || !cs) continue;
      this.insert(view.children, cv.li, cs.startedAt || 0, false);
      view.li.classList.add('parent');
    }
  }

  startOf(li) {
    const s = this.sessions.get(li.dataset.key);
    return (s && s.startedAt) || 0;
  }

  remove(key) {
    const view = this.views.get(key);
    this.sessions.delete(key);
    this.dirty.delete(key);
    if (!view) return;
    // Children the list still has move to the top level until they are placed again.
    for (const child of [...view.children.children]) {
      this.root.append(child);
      if (!this.waiting.has(key)) this.waiting.set(key, new Set());
      this.waiting.get(key).add(child.dataset.key);
    }
    view.li.remove();
    this.views.delete(key);
  }

  click(e) {
    const li = e.target.closest('li[data-key]');
    if (!li) return;
    const key = li.dataset.key;
    if (e.target.closest('.caret')) {
      li.classList.toggle('collapsed');
      return;
    }
    const kill = e.target.closest('.kill');
    if (kill) {
      this.hooks.onKill(key, kill);
      return;
    }
    this.hooks.onSelect(key);
  }

  // Counts for the header.
  totals() {
    const t = { running: 0, done: 0, failed: 0, timeout: 0, killed: 0, tokens: 0, cost: 0, costKnown: false };
    for (const s of this.sessions.values()) {
      t[s.status] = (t[s.status] || 0) + 1;
      t.tokens += s.tokens || 0;
      if (typeof s.cost === 'number') {
        t.cost += s.cost;
        t.costKnown = true;
      }
    }
    return t;
  }
}

// The gateway connection: the OpenClaw-compatible WebSocket protocol as an operator.
//
// The server speaks first (`connect.challenge`); we answer with `connect` (role operator,
// the dashboard's client identity, the scopes it can use, the shared token in
// `auth.token`), then get `hello-ok` with the scopes granted. Requests are `req` frames
// matched to their `res` by id; everything else is an event, pushed without asking.
//
// A refused connect (a wrong token) is final: retrying would only spend the address's
// failed-auth budget and lock out the right token too. Any other loss (the gateway
// restarting, a network blip, missed ticks) reconnects with exponential backoff and
// jitter; `onReady` fires again so the caller reloads its picture.

export const CLIENT_ID = 'hivegate-dashboard';
export const CLIENT_MODE = 'ui';
const PROTOCOL = 4;
const SCOPES = ['operator.read', 'operator.write', 'operator.pairing'];
const HANDSHAKE_MS = 15000;
const REQUEST_MS = 30000;
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 15000;

export class GatewayError extends Error {
  constructor(method, shape) {
    super(shape && shape.message ? shape.message : `${method} failed`);
    this.method = method;
    this.code = shape && shape.code;
    this.details = shape && shape.details;
  }
}

export class Gateway {
  // handlers: onState(state, text), onReady(hello), onEvent(name, payload), onGap(),
  // onRefused(message)
  constructor(url, token, handlers) {
    this.url = url;
    this.token = token;
    this.h = handlers;
    this.ws = null;
    this.nextId = 1;
    this.pending = new Map();
    this.attempt = 0;
    this.stopped = false;
    this.ready = false;
    this.lastSeen = 0;
    this.lastSeq = null;
    this.tickMs = 30000;
    this.timers = {};
    this.watchdog = setInterval(() => this.checkAlive(), 5000);
  }

  start() {
    this.stopped = false;
    this.open();
  }

  stop() {
    this.stopped = true;
    clearInterval(this.watchdog);
    for (const t of Object.values(this.timers)) clearTimeout(t);
    if (this.ws) this.ws.close(1000, 'dashboard closed');
    this.failPending('the dashboard closed the connection');
  }

  open() {
    this.ready = false;
    this.lastSeq = null;
    this.h.onState('connecting', this.attempt ? `reconnecting (attempt ${this.attempt + 1})` : 'connecting');
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (e) {
      this.h.onState('error', `cannot open ${this.url}: ${e.message}`);
      return this.retry();
    }
    this.ws = ws;
    this.timers.handshake = setTimeout(() => ws.close(4000, 'handshake timeout'), HANDSHAKE_MS);
    ws.onmessage = (m) => this.receive(ws, m.data);
    ws.onclose = (e) => this.closed(ws, e);
  }

  receive(ws, data) {
    if (ws !== this.ws) return;
    this.lastSeen = Date.now();
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (frame.type === 'res') return this.answer(frame);
    if (frame.type !== 'event') return;
    if (frame.event === 'connect.challenge') return this.sendConnect();
    // Broadcast events (ticks too) are numbered per connection: a gap means lost events.
    if (typeof frame.seq === 'number') {
      if (this.lastSeq !== null && frame.seq > this.lastSeq + 1) this.h.onGap();
      this.lastSeq = frame.seq;
    }
    if (frame.event !== 'tick') this.h.onEvent(frame.event, frame.payload || {});
  }

  sendConnect() {
    const params = {
      minProtocol: PROTOCOL,
      maxProtocol: PROTOCOL,
      client: {
        id: CLIENT_ID,
        displayName: 'hivegate dashboard',
        version: '1',
        platform: 'web',
        mode: CLIENT_MODE,
      },
      role: 'operator',
      scopes: SCOPES,
      caps: [],
      auth: { token: this.token },
      userAgent: navigator.userAgent,
      locale: navigator.language,
    };
    this.send({ type: 'req', id: 'connect', method: 'connect', params });
  }

  answer(frame) {
    if (frame.id === 'connect') {
      clearTimeout(this.timers.handshake);
      if (!frame.ok) {
        this.stopped = true;
        const message = (frame.error && frame.error.message) || 'the gateway refused the connection';
        this.h.onRefused(message);
        return;
      }
      const hello = frame.payload || {};
      this.ready = true;
      this.attempt = 0;
      if (hello.policy && hello.policy.tickIntervalMs) this.tickMs = hello.policy.tickIntervalMs;
      this.h.onReady(hello);
      return;
    }
    const waiting = this.pending.get(frame.id);
    if (!waiting) return;
    this.pending.delete(frame.id);
    clearTimeout(waiting.timer);
    if (frame.ok) waiting.resolve(frame.payload);
    else waiting.reject(new GatewayError(waiting.method, frame.error));
  }

  request(method, params) {
    if (!this.ready) return Promise.reject(new GatewayError(method, { message: 'not connected to the gateway' }));
    const id = `r${this.nextId++}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new GatewayError(method, { message: `${method} timed out` }));
      }, REQUEST_MS);
      this.pending.set(id, { method, resolve, reject, timer });
      this.send({ type: 'req', id, method, params: params || {} });
    });
  }

  send(frame) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(frame));
  }

  closed(ws, event) {
    if (ws !== this.ws) return;
    clearTimeout(this.timers.handshake);
    this.ready = false;
    this.ws = null;
    this.failPending('the connection to the gateway closed');
    if (event.code === 4001) {
      this.stopped = true;
      this.h.onRefused('the gateway token changed; enter the new one');
      return;
    }
    if (!this.stopped) this.retry(event.reason);
  }

  retry(reason) {
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.attempt);
    const delay = Math.round(base * (0.8 + Math.random() * 0.4));
    this.attempt += 1;
    const why = reason ? ` (${reason})` : '';
    this.h.onState('retrying', `disconnected${why}; reconnecting in ${(delay / 1000).toFixed(1)} s`);
    this.timers.retry = setTimeout(() => this.open(), delay);
  }

  failPending(message) {
    for (const [id, waiting] of this.pending) {
      clearTimeout(waiting.timer);
      waiting.reject(new GatewayError(waiting.method, { message }));
      this.pending.delete(id);
    }
  }

  // Two missed ticks: the socket is dead even if nobody said so.
  checkAlive() {
    if (this.ready && this.ws && Date.now() - this.lastSeen > 2 * this.tickMs + 5000) {
      this.ws.close(4000, 'tick timeout');
    }
  }
}

// One WebSocket to the gateway: request ids, replies, and a reconnect backoff.
// Speaks only the public protocol (contract section 4); knows nothing of the board.
// Every message and its JSON Schema: docs/asyncapi.yaml (AsyncAPI 3, generated from the
// gateway's wire models); prose and examples: docs/protocol.md.

export const BACKOFF_MIN_MS = 500;
export const BACKOFF_MAX_MS = 10000;

/** Delay before reconnect attempt `attempt` (0-based): 0.5 s doubling to 10 s, +-25 % jitter. */
export function backoffDelay(attempt, random = Math.random) {
  const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** Math.min(attempt, 16));
  const jittered = base * (0.75 + 0.5 * random());
  return Math.round(Math.min(BACKOFF_MAX_MS, Math.max(BACKOFF_MIN_MS / 2, jittered)));
}

/** The gateway's WebSocket address: same host:port as the page, path /ws.
 *  `?gateway=ws://host:port/ws` overrides it (used when the page is opened from a file). */
export function gatewayUrl(loc = window.location) {
  const override = new URLSearchParams(loc.search).get('gateway');
  if (override) return override;
  if (loc.protocol !== 'http:' && loc.protocol !== 'https:') return 'ws://127.0.0.1:8765/ws';
  return `${loc.protocol === 'https:' ? 'wss' : 'ws'}://${loc.host}/ws`;
}

export class ProtocolError extends Error {
  constructor(code, message) {
    super(message || code);
    this.code = code;
  }
}

/**
 * A single socket. `open()` resolves once the socket is open and rejects if it cannot open.
 * Messages that are replies to `request()` resolve/reject that request; every message
 * (replies included, before their promise settles) is handed to `onMessage` in arrival order.
 */
export class Connection {
  constructor(url, { onMessage, onClose } = {}) {
    this.url = url;
    this.onMessage = onMessage || (() => {});
    this.onClose = onClose || (() => {});
    this.ws = null;
    this.nextId = 1;
    this.pending = new Map();
    this.opened = false;
    this.closed = false;
  }

  open(timeoutMs = 8000) {
    return new Promise((resolve, reject) => {
      let ws;
      try {
        ws = new WebSocket(this.url);
      } catch (e) {
        reject(new ProtocolError('unreachable', String(e && e.message || e)));
        return;
      }
      this.ws = ws;
      const timer = setTimeout(() => {
        if (!this.opened) {
          try { ws.close(); } catch (_) { /* ignore */ }
          reject(new ProtocolError('unreachable', 'timed out opening the connection'));
        }
      }, timeoutMs);
      ws.onopen = () => {
        clearTimeout(timer);
        this.opened = true;
        resolve(this);
      };
      ws.onmessage = (ev) => this._receive(ev.data);
      ws.onerror = () => { /* onclose follows and carries the outcome */ };
      ws.onclose = (ev) => {
        clearTimeout(timer);
        const wasOpen = this.opened;
        this.closed = true;
        this.opened = false;
        for (const [, p] of this.pending) {
          clearTimeout(p.timer);
          p.reject(new ProtocolError('closed', 'connection closed'));
        }
        this.pending.clear();
        if (!wasOpen) reject(new ProtocolError('unreachable', `cannot open ${this.url}`));
        else this.onClose({ code: ev.code, reason: ev.reason });
      };
    });
  }

  get isOpen() {
    return this.opened && this.ws && this.ws.readyState === WebSocket.OPEN;
  }

  send(obj) {
    if (!this.isOpen) return false;
    this.ws.send(JSON.stringify(obj));
    return true;
  }

  /** Send `obj` with a fresh id; resolves with the reply, rejects with ProtocolError on `error`. */
  request(obj, timeoutMs = 10000) {
    const id = this.nextId++;
    const msg = { ...obj, id };
    return new Promise((resolve, reject) => {
      if (!this.send(msg)) {
        reject(new ProtocolError('closed', 'not connected'));
        return;
      }
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new ProtocolError('timeout', `no reply to ${obj.type}`));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer, type: obj.type });
    });
  }

  close() {
    this.closed = true;
    if (this.ws) {
      this.ws.onclose = null;
      this.ws.onmessage = null;
      try { this.ws.close(1000, 'bye'); } catch (_) { /* ignore */ }
    }
    for (const [, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new ProtocolError('closed', 'connection closed'));
    }
    this.pending.clear();
    this.opened = false;
  }

  _receive(data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch (_) {
      console.warn('blf: ignoring a frame that is not JSON');
      return;
    }
    if (!msg || typeof msg !== 'object') return;
    // The message is applied first, then its request settles: ordering with the
    // lamp messages that follow a snapshot is then exactly the wire order.
    try {
      this.onMessage(msg);
    } catch (e) {
      console.error('blf: error applying message', msg, e);
    }
    let id = msg.id;
    // The gateway answers requests in order; an error without an id (e.g. rate_limited,
    // sent before the frame was parsed) belongs to the oldest request still waiting.
    if (msg.type === 'error' && (id === undefined || id === null) && this.pending.size) {
      id = this.pending.keys().next().value;
    }
    if (id !== undefined && this.pending.has(id)) {
      const p = this.pending.get(id);
      this.pending.delete(id);
      clearTimeout(p.timer);
      if (msg.type === 'error') p.reject(new ProtocolError(msg.code || 'error', msg.message));
      else p.resolve(msg);
    }
  }
}

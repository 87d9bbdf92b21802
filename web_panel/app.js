// The switchboard page: login, session (token reconnect with backoff), subscriptions, pickup.
import { Connection, backoffDelay, gatewayUrl } from './connection.js';
import { Board } from './board.js';
import { AdminView } from './admin.js';

const $ = (id) => document.getElementById(id);
const STORAGE_KEY = 'blf.session';
const OFFLINE_AFTER_ATTEMPTS = 6;   // 0.5+1+2+4+8+10 s of failures: call it offline
const PICKUP_TIMEOUT_MS = 15000;
// A pickup whose answer was lost with the connection is re-sent (same `op`: the gateway
// answers a repeated op like the first, never carries it out twice) if the connection is
// back within this time; after it the call has most likely stopped ringing, and the page
// says the outcome is unknown instead of acting on an old answer.
const PICKUP_RESEND_MS = 20000;
const resendMs = () => window.__blf.pickupResendMs || PICKUP_RESEND_MS;  // tests shorten it
const PICKUP_UNKNOWN = 'Connection lost: whether the pickup happened is unknown. Check your phone';
const RESULT_TTL_MS = 8000;

const LOGIN_ERRORS = {
  auth_failed: 'Wrong client name or password.',
  rate_limited: 'Too many login attempts. Wait a minute, then try again.',
  unavailable: 'The gateway is not ready yet. Try again in a moment.',
  forbidden: 'This client may not log in here.',
  bad_request: 'The gateway did not accept the login request.',
  timeout: 'The gateway did not answer the login. Try again.',
  closed: 'The connection closed during login. Try again.',
};

const ACTION_TTL_MS = 30000;        // as long as the gateway holds the call for us (pickup.claim_seconds)

// error code -> [state at the lamp, text]; the gateway's message is added where it helps.
const PICKUP_ERRORS = {
  not_found: ['none', 'Nothing to take: no call is ringing there'],
  conflict: ['lost', 'Lost to someone else'],
  forbidden: ['error', 'Not allowed: you may not pick up this call'],
  rate_limited: ['error', 'Too many requests: try again'],
  unavailable: ['error', 'The line is not available: try again'],
  unauthenticated: ['error', 'Not logged in'],
  bad_request: ['error', 'The gateway refused the request'],
  timeout: ['error', 'No answer from the gateway'],
  closed: ['error', 'Connection lost before the answer'],
};

let opCounter = 0;
function makeOp() {
  if (window.crypto && typeof window.crypto.randomUUID === 'function') return window.crypto.randomUUID();
  opCounter += 1;
  return `op-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}-${opCounter}`;
}

function timeOfDay(d = new Date()) {
  return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

class App {
  constructor() {
    this.url = gatewayUrl();
    this.board = new Board({
      board: $('board'),
      tabs: $('tabs'),
      monitors: $('monitors'),
      monitorGrid: $('monitor-grid'),
      noPanels: $('no-panels'),
    });
    this.conn = null;
    this.client = null;
    this.token = null;
    this.display = null;
    this.mode = 'login';          // login | live | reconnecting
    this.attempt = 0;
    this.retryTimer = null;
    this.retryAt = 0;
    this.countdown = null;
    this.lostAt = null;
    this.pickups = new Map();     // op -> {target, timer, name}
    this.statusTimer = null;
    this.hooks = window.__blf;
    this.hooks.app = this;
    this.hooks.connState = 'offline';
    this.hooks.reconnects = 0;
    $('gateway-url').textContent = this.url;
    this.admin = new AdminView(this);
    this._wire();
    this._resume();
  }

  // ----- UI wiring -----------------------------------------------------------------

  _wire() {
    $('login-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const client = $('login-client').value.trim();
      const password = $('login-password').value;
      if (!client) {
        this._loginMessage('Enter your client name.');
        $('login-client').focus();
        return;
      }
      this.loginWithPassword(client, password);
    });
    $('logout').addEventListener('click', () => this.logout());
    $('pickup-status-close').addEventListener('click', () => this._hideStatus());
    $('retry-now').addEventListener('click', () => this._retryNow());

    const filter = $('filter');
    let pending = false;
    filter.addEventListener('input', () => {
      if (pending) return;
      pending = true;
      requestAnimationFrame(() => { pending = false; this.board.setFilter(filter.value); });
    });
    filter.addEventListener('keydown', (e) => {
      if (e.key === 'Escape') { filter.value = ''; this.board.setFilter(''); }
    });
    document.addEventListener('keydown', (e) => {
      if (e.key !== '/' || this.mode === 'login') return;
      const t = e.target;
      if (t && (t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.isContentEditable)) return;
      e.preventDefault();
      filter.focus();
      filter.select();
    });

    const view = $('board-view');
    view.addEventListener('click', (e) => {
      const li = e.target.closest && e.target.closest('li.card');
      if (li) this._tryPickup(li);
    });
    view.addEventListener('keydown', (e) => {
      const li = e.target;
      if (!li || !li.classList || !li.classList.contains('card')) return;
      if (e.key === 'Enter' || e.key === ' ' || e.key === 'Spacebar') {
        const info = this.board.targetOf(li);
        if (info && info.canPickup && info.model.lamp === 'ringing') e.preventDefault();
        if (!e.repeat) this._tryPickup(li);
        return;
      }
      this._arrowNav(e, li);
    });

    window.addEventListener('online', () => { if (this.mode === 'reconnecting') this._retryNow(); });
    window.addEventListener('offline', () => {
      if (this.mode === 'live' || this.mode === 'reconnecting') this._setConnState('offline', 'The computer has no network');
    });
  }

  _arrowNav(e, li) {
    const keys = ['ArrowLeft', 'ArrowRight', 'ArrowUp', 'ArrowDown', 'Home', 'End'];
    if (!keys.includes(e.key)) return;
    const grid = li.parentElement;
    const cards = Array.from(grid.children).filter((c) => !c.hidden);
    const i = cards.indexOf(li);
    if (i < 0) return;
    const cols = Math.max(1, getComputedStyle(grid).gridTemplateColumns.split(' ').filter(Boolean).length);
    let j = i;
    if (e.key === 'ArrowLeft') j = i - 1;
    else if (e.key === 'ArrowRight') j = i + 1;
    else if (e.key === 'ArrowUp') j = i - cols;
    else if (e.key === 'ArrowDown') j = i + cols;
    else if (e.key === 'Home') j = 0;
    else if (e.key === 'End') j = cards.length - 1;
    if (j >= 0 && j < cards.length && j !== i) {
      e.preventDefault();
      cards[j].focus();
    }
  }

  _loginMessage(text, kind = 'error') {
    const m = $('login-message');
    m.textContent = text;
    m.dataset.kind = kind;
  }

  _showLogin(message, kind = 'error') {
    this.mode = 'login';
    if (this.admin) this.admin.setAllowed(false);
    $('login-view').hidden = false;
    $('board-view').hidden = true;
    $('topbar').hidden = true;
    $('banner').hidden = true;
    document.body.classList.remove('disconnected');
    this._loginBusy(false);
    this._loginMessage(message || '', kind);
    if (this.client) $('login-client').value = this.client;
    ($('login-client').value ? $('login-password') : $('login-client')).focus();
  }

  _loginBusy(busy) {
    $('login-submit').disabled = busy;
    $('login-form').setAttribute('aria-busy', String(busy));
  }

  _showBoard() {
    $('login-view').hidden = true;
    $('board-view').hidden = !!(this.admin && this.admin.open);
    $('topbar').hidden = false;
  }

  _announce(text) {
    const a = $('announcer');
    a.textContent = '';
    // A fresh text node after a tick makes screen readers announce a repeated message too.
    setTimeout(() => { a.textContent = text; }, 50);
  }

  _toast(text, ms = 6000) {
    const t = document.createElement('div');
    t.className = 'toast';
    t.textContent = text;
    $('toasts').appendChild(t);
    setTimeout(() => t.remove(), ms);
  }

  _setConnState(state, detail = '') {
    const c = $('conn');
    c.dataset.state = state;
    c.querySelector('use').setAttribute('href', `#i-conn-${state}`);
    const text = { connected: 'Connected', reconnecting: 'Reconnecting\u2026', offline: 'Offline' }[state];
    if ($('conn-text').textContent !== text) $('conn-text').textContent = text;
    $('conn-detail').textContent = detail;
    $('retry-now').hidden = state === 'connected';
    document.body.classList.toggle('disconnected', state !== 'connected');
    this.hooks.connState = state;
  }

  // ----- session -----------------------------------------------------------------

  _newConnection() {
    const conn = new Connection(this.url, {
      onMessage: (msg) => this._onMessage(conn, msg),
      onClose: (info) => this._onClose(conn, info),
    });
    return conn;
  }

  _save() {
    try {
      sessionStorage.setItem(STORAGE_KEY, JSON.stringify({ client: this.client, token: this.token, url: this.url }));
    } catch (_) { /* storage may be disabled */ }
  }

  _forget() {
    try { sessionStorage.removeItem(STORAGE_KEY); } catch (_) { /* ignore */ }
    this.token = null;
  }

  /** After a page reload: try the stored token once. */
  async _resume() {
    let saved = null;
    try { saved = JSON.parse(sessionStorage.getItem(STORAGE_KEY) || 'null'); } catch (_) { saved = null; }
    if (!saved || !saved.token || !saved.client || saved.url !== this.url) {
      this._showLogin('', 'info');
      return;
    }
    this.client = saved.client;
    this.token = saved.token;
    $('login-client').value = saved.client;
    this._showLogin('Resuming your session\u2026', 'info');
    this._loginBusy(true);
    const conn = this._newConnection();
    try {
      await conn.open();
    } catch (_) {
      this._showLogin(`Cannot reach the gateway at ${this.url}. It may be down: try again in a moment.`);
      return;
    }
    try {
      const welcome = await conn.request({ type: 'login', client: saved.client, token: saved.token, batch: true });
      this._established(conn, welcome, saved.client);
    } catch (e) {
      conn.close();
      this._forget();
      this._showLogin(e.code === 'auth_failed' ? 'Your session has ended. Please log in again.' : (LOGIN_ERRORS[e.code] || e.message));
    }
  }

  async loginWithPassword(client, password) {
    this._loginBusy(true);
    this._loginMessage('Connecting\u2026', 'info');
    const conn = this._newConnection();
    try {
      await conn.open();
    } catch (_) {
      this._loginBusy(false);
      this._loginMessage(`Cannot reach the gateway at ${this.url}. It may be down: try again in a moment.`);
      return;
    }
    try {
      // An empty field sends no `password` at all: a client whose administrator set
      // "send the password at next login" has none yet (contract section 4).
      const req = { type: 'login', client, batch: true };
      if (password !== '') req.password = password;
      const welcome = await conn.request(req);
      $('login-password').value = '';
      this._established(conn, welcome, client);
    } catch (e) {
      conn.close();
      this._loginBusy(false);
      const text = LOGIN_ERRORS[e.code] || `Login failed: ${e.message}`;
      this._loginMessage(text);
      if (e.code === 'auth_failed') $('login-password').select();
    }
  }

  _established(conn, welcome, client) {
    if (this.conn && this.conn !== conn) this.conn.close();
    this.conn = conn;
    this.client = (welcome.client && welcome.client.name) || client;
    this.display = (welcome.client && (welcome.client.display ||
      [welcome.client.first_name, welcome.client.last_name].filter(Boolean).join(' '))) || this.client;
    if (welcome.token) this.token = welcome.token;
    this._save();
    const wasLost = this.mode === 'reconnecting';
    this.mode = 'live';
    this.attempt = 0;
    this.lostAt = null;
    this._clearRetry();
    this.board.epoch += 1;
    this.board.me = this.client;
    this.hooks.welcome = welcome;
    if (wasLost) this.hooks.reconnects += 1;

    this._showBoard();
    $('banner').hidden = true;
    $('me-name').textContent = this.display === this.client ? this.client : `${this.display} (${this.client})`;
    this._setConnState('connected');
    this.board.setPanels(Array.isArray(welcome.panels) ? welcome.panels.map(String) : []);
    this.board.setMonitors(welcome.monitors);
    this._subscribeAll(conn);
    this._resendPickups();
    this.admin.setAllowed(welcome.admin === true);
    if (this.admin.open) this.admin.refresh();

    if (welcome.password) this._showPassword(String(welcome.password));
    const offline = Number(welcome.offline_calls) || 0;
    if (offline > 0 && !wasLost) this._toast(`${offline} call${offline === 1 ? '' : 's'} came in while you were away.`);
  }

  _showPassword(pw) {
    $('pw-value').textContent = pw;
    const d = $('password-dialog');
    if (typeof d.showModal === 'function') {
      if (!d.open) d.showModal();
    } else {
      d.setAttribute('open', '');
    }
    d.addEventListener('close', () => { $('pw-value').textContent = ''; }, { once: true });
    $('pw-ok').focus();
  }

  _subscribeAll(conn) {
    for (const name of this.board.panels.keys()) this._subscribe(conn, { panel: name }, 0);
    for (const id of this.board.devices.keys()) this._subscribe(conn, { device: id }, 0);
  }

  _subscribe(conn, target, tries) {
    if (conn !== this.conn || !conn.isOpen) return;
    const req = { type: 'subscribe', ...target };
    const since = this.board.sinceFor(target);
    if (since !== null) req.since = since;
    conn.request(req).catch((e) => {
      if (conn !== this.conn) return;
      if ((e.code === 'rate_limited' || e.code === 'unavailable' || e.code === 'timeout') && tries < 8) {
        setTimeout(() => this._subscribe(conn, target, tries + 1), backoffDelay(tries));
        return;
      }
      if (e.code === 'closed') return;
      const text = e.code === 'forbidden' ? 'Not allowed' : e.code === 'not_found' ? 'No such panel' : `Error: ${e.message}`;
      if (target.panel !== undefined) this.board.setPanelError(target.panel, text);
      else this._toast(`Line ${target.device}: ${text}`);
    });
  }

  _onMessage(conn, msg) {
    if (conn !== this.conn && msg.type !== 'welcome' && msg.type !== 'error') return;
    switch (msg.type) {
      case 'lamp':
        this.board.applyLamp(msg);
        break;
      case 'lamps': // several changes in one frame (we log in with batch: true)
        for (const change of msg.changes || []) this.board.applyLamp(change);
        break;
      case 'snapshot':
        this.board.applySnapshot(msg);
        break;
      case 'pickup_result':
        this._pickupResult(msg);
        break;
      case 'action':
        if (msg.action === 'pickup') this._pickupAction(msg);
        break;
      case 'error':
        if ((msg.id === undefined || msg.id === null) && conn.pending.size === 0) {
          if (msg.code === 'unauthenticated' && conn === this.conn) this._toast('The gateway ended the session.');
          else if (conn === this.conn) this._toast(msg.message || msg.code);
        }
        break;
      default:
        break; // welcome / ok are handled by their request; presence and others are not shown
    }
  }

  _onClose(conn) {
    if (conn !== this.conn || this.mode !== 'live') return;
    this._lost();
  }

  _lost() {
    this.mode = 'reconnecting';
    this.lostAt = new Date();
    this.board.setStale(true);
    const banner = $('banner');
    banner.textContent = `Connection to the gateway lost at ${timeOfDay(this.lostAt)}. ` +
      'The board shows the last known state and may be out of date.';
    banner.hidden = false;
    for (const [op, p] of this.pickups) this._pickupInDoubt(op, p);
    this._scheduleReconnect();
  }

  _clearRetry() {
    if (this.retryTimer) clearTimeout(this.retryTimer);
    if (this.countdown) clearInterval(this.countdown);
    this.retryTimer = null;
    this.countdown = null;
  }

  _scheduleReconnect() {
    this._clearRetry();
    if (this.mode !== 'reconnecting') return;
    const delay = backoffDelay(this.attempt);
    this.attempt += 1;
    this.retryAt = performance.now() + delay;
    const state = this.attempt > OFFLINE_AFTER_ATTEMPTS || navigator.onLine === false ? 'offline' : 'reconnecting';
    const showCountdown = () => {
      const left = Math.max(0, (this.retryAt - performance.now()) / 1000);
      this._setConnState(state, `retry in ${left.toFixed(left < 10 ? 1 : 0)} s`);
    };
    showCountdown();
    this.countdown = setInterval(showCountdown, 500);
    this.retryTimer = setTimeout(() => this._reconnect(), delay);
  }

  _retryNow() {
    if (this.mode !== 'reconnecting') return;
    this._clearRetry();
    this._reconnect();
  }

  async _reconnect() {
    this._clearRetry();
    if (this.mode !== 'reconnecting') return;
    this._setConnState(this.attempt > OFFLINE_AFTER_ATTEMPTS ? 'offline' : 'reconnecting', 'connecting\u2026');
    const conn = this._newConnection();
    this.pendingConn = conn;
    try {
      await conn.open();
    } catch (_) {
      if (this.pendingConn === conn) this._scheduleReconnect();
      return;
    }
    if (this.mode !== 'reconnecting' || this.pendingConn !== conn) { conn.close(); return; }
    let welcome;
    try {
      welcome = await conn.request({ type: 'login', client: this.client, token: this.token, batch: true });
    } catch (e) {
      conn.close();
      if (this.mode !== 'reconnecting') return;
      if (e.code === 'auth_failed' || e.code === 'unauthenticated') {
        this._forget();
        for (const [op] of this.pickups) this._finishPickup(op, null, '');
        this.board.clear();
        this.conn = null;
        this._showLogin('Your session has ended (it expired or your password changed). Please log in again.');
        return;
      }
      this._scheduleReconnect();
      return;
    }
    if (this.mode !== 'reconnecting') { conn.close(); return; }
    this._established(conn, welcome, this.client);
  }

  logout() {
    this.mode = 'login';
    this._clearRetry();
    if (this.conn) this.conn.close();
    this.conn = null;
    this._forget();
    for (const [op] of this.pickups) this._finishPickup(op, null, '');
    this._hideStatus();
    this.board.clear();
    this._setConnState('offline');
    this._showLogin('You are logged out.', 'info');
  }

  // ----- pickup --------------------------------------------------------------------

  _tryPickup(li) {
    const info = this.board.targetOf(li);
    if (!info || !info.canPickup || info.model.lamp !== 'ringing') return;
    if (info.model.pickup && info.model.pickup.state === 'pending') return;
    this.pickup(info.target, info.model);
  }

  pickup(target, model) {
    const name = model.display || model.key;
    if (!this.conn || !this.conn.isOpen || this.mode !== 'live') {
      this.board.setPickup(target, 'error', 'Not connected', RESULT_TTL_MS);
      this._announce(`${name}: not connected, cannot pick up`);
      return;
    }
    const op = makeOp();
    this.pickups.set(op, { target, timer: null, name, lostAt: null });
    this.board.setPickup(target, 'pending', 'Picking up\u2026');
    this._announce(`Picking up the call for ${name}`);
    this.hooks.pickupsSent = (this.hooks.pickupsSent || 0) + 1;
    this._sendPickup(op);
  }

  /** Send (or re-send, with the same `op`) pickup `op` on the current connection. */
  _sendPickup(op) {
    const p = this.pickups.get(op);
    if (!p) return;
    const conn = this.conn;
    clearTimeout(p.timer);
    p.timer = setTimeout(() => this._finishPickup(op, 'error', 'No answer from the gateway'), PICKUP_TIMEOUT_MS);
    p.lostAt = null;
    const req = { type: 'pickup', ...p.target, op };
    conn.request(req).then(() => {
      // `ok`: accepted; the outcome follows as `action` (our phone dials) or `pickup_result`.
    }, (e) => {
      // The connection dropped before the answer: _lost() keeps the pickup, and it is
      // re-sent with the same op once we are back.
      if (e.code === 'closed' && (conn !== this.conn || this.mode !== 'live')) return;
      const [state, base] = PICKUP_ERRORS[e.code] || ['error', 'Pickup failed'];
      let text = base;
      if (e.code === 'conflict') text = `${base}: ${e.message || 'the call is being taken'}`;
      else if (state === 'error' && e.message && !PICKUP_ERRORS[e.code]) text = `${base}: ${e.message}`;
      this._finishPickup(op, state, text);
    });
  }

  /** The connection dropped with pickup `op` unanswered: wait for the reconnect to re-send
   *  it; if that takes too long, say that its outcome is unknown. */
  _pickupInDoubt(op, p) {
    if (p.lostAt !== null) return;
    clearTimeout(p.timer);
    p.lostAt = performance.now();
    p.timer = setTimeout(() => this._finishPickup(op, 'unknown', PICKUP_UNKNOWN, { ttl: ACTION_TTL_MS }),
      resendMs());
    this.board.setPickup(p.target, 'pending', 'Connection lost: the pickup will be sent again\u2026');
  }

  _resendPickups() {
    for (const [op, p] of this.pickups) {
      if (p.lostAt === null) continue;
      if (performance.now() - p.lostAt > resendMs()) {
        this._finishPickup(op, 'unknown', PICKUP_UNKNOWN, { ttl: ACTION_TTL_MS });
        continue;
      }
      this.hooks.pickupsResent = (this.hooks.pickupsResent || 0) + 1;
      this.board.setPickup(p.target, 'pending', 'Picking up\u2026');
      this._sendPickup(op);
    }
  }

  /** `action` pickup: the gateway holds the call for us; our own phone must dial to take it. */
  _pickupAction(msg) {
    const p = this.pickups.get(msg.op);
    const dial = msg.dial == null ? '' : String(msg.dial);
    const where = msg.number ? String(msg.number) : (msg.sip_user ? String(msg.sip_user) : '');
    const text = dial
      ? `Dial ${dial} on your phone to take the call`
      : `Take the call on your phone${where ? ` (line ${where})` : ''}`;
    const name = p ? p.name
      : (msg.target ? this._memberName(String(msg.target)) : (msg.number ? `line ${msg.number}` : 'the call'));
    this.hooks.lastAction = msg;
    this._showStatus(name, text, dial);
    if (p) this._finishPickup(msg.op, 'dial', text, { dial, ttl: ACTION_TTL_MS, announce: false });
  }

  /** The status area under the top bar (aria-live): what the user's phone must do now. */
  _showStatus(name, text, dial) {
    const box = $('pickup-status');
    const body = $('pickup-status-text');
    body.textContent = '';
    const who = document.createElement('span');
    who.className = 'status-who';
    who.textContent = `Pickup for ${name}: `;
    body.appendChild(who);
    if (dial) {
      const i = text.indexOf(dial);
      body.append(text.slice(0, i));
      const k = document.createElement('kbd');
      k.className = 'dial';
      k.textContent = dial;
      body.append(k, text.slice(i + dial.length));
    } else {
      body.append(text);
    }
    box.hidden = false;
    if (this.statusTimer) clearTimeout(this.statusTimer);
    this.statusTimer = setTimeout(() => this._hideStatus(), ACTION_TTL_MS);
  }

  _hideStatus() {
    if (this.statusTimer) clearTimeout(this.statusTimer);
    this.statusTimer = null;
    $('pickup-status').hidden = true;
    $('pickup-status-text').textContent = '';
  }

  _memberName(client) {
    if (!client) return null;
    if (client === this.client) return 'you';
    for (const p of this.board.panels.values()) {
      const m = p.members.get(String(client));
      if (m) return m.display || m.key;
    }
    return String(client);
  }

  /** `pickup_result` (the PBX carried the pickup out, e.g. Asterisk): ok, or why not. */
  _pickupResult(msg) {
    const p = this.pickups.get(msg.op);
    if (!p) return;
    const by = msg.by ? this._memberName(msg.by) : null;
    if (msg.ok) {
      this._finishPickup(msg.op, 'taken', by && by !== 'you'
        ? `Taken by ${by}` : 'Taken: the call is coming to your phone');
    } else if (by && by !== 'you') {
      this._finishPickup(msg.op, 'lost', `Lost to someone else: ${by} took it`);
    } else {
      this._finishPickup(msg.op, 'error', msg.message ? `Pickup failed: ${msg.message}` : 'Pickup failed');
    }
  }

  _finishPickup(op, state, text, { dial = '', ttl = RESULT_TTL_MS, announce = true } = {}) {
    const p = this.pickups.get(op);
    if (!p) return;
    clearTimeout(p.timer);
    this.pickups.delete(op);
    this.board.setPickup(p.target, state, text, ttl, dial);
    if (text && announce) this._announce(`${p.name}: ${text}`);
    this.hooks.lastPickup = { op, state, text, target: p.target };
  }
}

window.__blf = window.__blf || {};
window.__blf.start = () => new App();
if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', () => window.__blf.start());
else window.__blf.start();

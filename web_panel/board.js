// The board: panels of member cards and the strip of monitored lines.
// Model first (applySnapshot / applyLamp keep per-member seq and never go backwards),
// DOM second: changed cards are marked dirty and written once per animation frame.

export const LAMP_LABEL = {
  ringing: 'Ringing',
  busy: 'Busy',
  held: 'On hold',
  outgoing: 'Calling out',
  idle: 'Idle',
  offline: 'Offline',
  unknown: 'Unknown',
};

const CALL_STATE_LABEL = {
  dialing: 'Dialling',
  ringing: 'Ringing',
  connected: 'Connected',
  held: 'On hold',
};

const PRESENCE_LABEL = {
  available: 'Available',
  away: 'Away',
  brb: 'Back soon',
  pause: 'On a break',
  busy: 'Busy',
  meeting: 'In a meeting',
  offwork: 'Off work',
  extwork: 'Working elsewhere',
  dnd: 'Do not disturb',
  holiday: 'On holiday',
  message: 'Message',
};

const APPLIED_CAP = 20000;

export function normLamp(lamp) {
  return Object.prototype.hasOwnProperty.call(LAMP_LABEL, lamp) ? lamp : 'unknown';
}

export function formatDuration(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

function toSeq(v) {
  const n = typeof v === 'number' ? v : Number(v);
  return Number.isFinite(n) ? n : null;
}

function searchKey(m) {
  const num = m.number == null ? '' : String(m.number);
  return `${m.display || ''} ${m.key} ${num} ${num.replace(/[^0-9+]/g, '')}`.toLowerCase();
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function svgUse(cls, href) {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('class', cls);
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('focusable', 'false');
  const use = document.createElementNS(ns, 'use');
  use.setAttribute('href', href);
  svg.appendChild(use);
  return { svg, use };
}

/** The measurement hooks tests and benchmarks read. */
function hooks() {
  if (!window.__blf) window.__blf = {};
  const h = window.__blf;
  h.applied = h.applied || [];      // [seq, receivedAt, inDomAt, key] (performance.now() ms)
  h.lastApplied = h.lastApplied || {}; // key -> seq that reached the DOM
  h.received = h.received || 0;     // lamp messages received
  h.ignored = h.ignored || 0;       // lamp messages dropped as older than what we have
  h.flushes = h.flushes || 0;
  return h;
}

/** One card: built once, then only the parts that changed are written. */
class CardView {
  constructor(kind, key) {
    this.kind = kind;
    this.key = key;
    const li = el('li', 'card');
    li.tabIndex = 0;
    if (kind === 'member') li.dataset.member = key;
    else li.dataset.device = key;
    li.dataset.lamp = 'unknown';

    const head = el('div', 'card-head');
    const lamp = el('span', 'lamp');
    this.lampEl = lamp;
    const icon = svgUse('lamp-icon', '#i-unknown');
    this.lampUse = icon.use;
    this.lampLabel = el('span', 'lamp-label', LAMP_LABEL.unknown);
    lamp.append(icon.svg, this.lampLabel);
    this.login = el('span', 'login-state');
    head.append(lamp, this.login);

    this.name = el('div', 'name');
    this.number = el('div', 'number');
    this.presence = el('div', 'presence');
    this.presence.hidden = true;
    this.calls = el('ul', 'calls');
    this.hint = el('div', 'pickup-hint', 'Pick up: click or Enter');
    this.hint.setAttribute('aria-hidden', 'true');
    this.result = el('div', 'pickup-result');
    this.result.hidden = true;

    li.append(head, this.name, this.number, this.presence, this.calls, this.hint, this.result);
    li._blfView = this;
    this.li = li;
    this.r = {};        // what is on screen now
    this.timers = [];   // [{el, since}]
  }

  /**
   * m: the model (display, number, lamp, calls, presence, logged_in, pickup)
   * ctx: {canPickup: bool, numberRight: (direction) => bool, stale: bool}
   */
  render(m, ctx) {
    const r = this.r;
    const li = this.li;
    const lamp = normLamp(m.lamp);
    if (r.lamp !== lamp) {
      li.dataset.lamp = lamp;
      this.lampUse.setAttribute('href', `#i-${lamp}`);
      this.lampLabel.textContent = LAMP_LABEL[lamp];
      r.lamp = lamp;
    }
    const display = m.display || m.key;
    if (r.display !== display) {
      this.name.textContent = display;
      this.name.title = display;
      r.display = display;
    }
    const number = m.number == null ? '' : String(m.number);
    if (r.number !== number) {
      this.number.textContent = number;
      r.number = number;
    }

    let presenceText = '';
    let presenceStatus = '';
    if (m.presence && m.presence.status) {
      presenceStatus = String(m.presence.status);
      presenceText = PRESENCE_LABEL[presenceStatus] || presenceStatus;
      if (m.presence.info) presenceText += ` \u2013 ${m.presence.info}`;
    }
    if (r.presenceText !== presenceText || r.presenceStatus !== presenceStatus) {
      this.presence.textContent = presenceText;
      this.presence.dataset.status = presenceStatus;
      this.presence.hidden = !presenceText;
      this.presence.title = presenceText;
      r.presenceText = presenceText;
      r.presenceStatus = presenceStatus;
    }

    let loginText = '';
    let loginState = '';
    if (m.logged_in === true) { loginText = 'Logged in'; loginState = 'in'; }
    else if (m.logged_in === false) { loginText = 'Logged out'; loginState = 'out'; }
    else if (m.logged_in === 'locked') { loginText = 'Locked'; loginState = 'locked'; }
    if (r.loginText !== loginText) {
      this.login.textContent = loginText;
      this.login.dataset.state = loginState;
      r.loginText = loginText;
    }

    const calls = Array.isArray(m.calls) ? m.calls : [];
    const sig = JSON.stringify(calls.map((c) => [c.id, c.direction, c.state, c.since, c.remote, c.remote_name]));
    if (r.callsSig !== sig) {
      this._renderCalls(calls, ctx);
      r.callsSig = sig;
    }

    const pickable = !!ctx.canPickup && lamp === 'ringing';
    if (r.pickable !== pickable) {
      li.classList.toggle('pickable', pickable);
      if (pickable) li.setAttribute('role', 'button');
      else li.removeAttribute('role');
      r.pickable = pickable;
    }
    const p = m.pickup;
    const pState = p ? p.state : '';
    const pText = p ? p.text : '';
    if (r.pState !== pState || r.pText !== pText) {
      this.result.textContent = '';
      const dial = p && p.dial ? String(p.dial) : '';
      const at = dial ? pText.indexOf(dial) : -1;
      if (at >= 0) {
        // "Dial **202 on your phone ...": the digits to dial stand out.
        this.result.append(pText.slice(0, at), el('strong', 'dial', dial), pText.slice(at + dial.length));
      } else {
        this.result.textContent = pText;
      }
      this.result.hidden = !pText;
      if (pState) li.dataset.pickup = pState;
      else delete li.dataset.pickup;
      r.pState = pState;
      r.pText = pText;
    }
    // The accessible name says what a screen reader user needs: who, state, and what Enter does.
    const label = `${display}${number ? `, ${number}` : ''}: ${LAMP_LABEL[lamp]}` +
      (loginText ? `, ${loginText}` : '') +
      (presenceText ? `, ${presenceText}` : '') +
      (pickable ? '. Press Enter to pick up' : '') +
      (pText ? `. ${pText}` : '');
    if (r.label !== label) {
      li.setAttribute('aria-label', label);
      r.label = label;
    }
  }

  _renderCalls(calls, ctx) {
    const ul = this.calls;
    ul.textContent = '';
    this.timers = [];
    for (const c of calls) {
      const li = el('li', 'call');
      li.dataset.state = c.state || '';
      li.dataset.direction = c.direction || '';
      const dir = el('span', 'call-dir', c.direction === 'out' ? '\u2192' : '\u2190');
      dir.title = c.direction === 'out' ? 'Outgoing call' : 'Incoming call';
      dir.setAttribute('aria-label', dir.title);
      const state = el('span', 'call-state', CALL_STATE_LABEL[c.state] || c.state || '');
      const timer = el('span', 'call-timer');
      const party = el('span', 'call-party');
      if (c.remote != null && c.remote !== '') {
        party.append(el('span', 'remote', String(c.remote)));
        if (c.remote_name) party.append(el('span', 'remote-name', String(c.remote_name)));
      } else if (c.remote_name) {
        party.append(el('span', 'remote-name', String(c.remote_name)));
      } else {
        const allowed = ctx.numberRight ? ctx.numberRight(c.direction) : false;
        party.append(el('span', 'remote-none', allowed ? 'Number withheld' : 'Number hidden'));
      }
      li.append(dir, state, timer, party);
      ul.appendChild(li);
      const since = Number(c.since);
      if (Number.isFinite(since) && since > 0) this.timers.push({ el: timer, since });
    }
  }

  tick(nowSec) {
    for (const t of this.timers) {
      const text = formatDuration(nowSec - t.since);
      if (t.el.textContent !== text) t.el.textContent = text;
    }
  }
}

export class Board {
  /**
   * els: {board, tabs, monitors, monitorGrid, noPanels}
   */
  constructor(els) {
    this.els = els;
    this.panels = new Map();    // name -> panel
    this.devices = new Map();   // id -> device
    this.epoch = 0;             // bumped on each (re)connection
    this.me = null;             // the logged-in client's name
    this.dirty = new Set();
    this.dirtyPanels = new Set();
    this.flushQueued = false;
    this.filter = '';
    this.view = 'all';
    this.timed = new Set();
    this.stale = false;
    this.h = hooks();
    this.h.board = this;
    this._onFrame = () => this.flush();
    this.timerInterval = setInterval(() => this.tickTimers(), 1000);
    // Ringing lamps flash together, two steps a second, driven from here: a CSS animation per
    // lamp would restyle (or repaint) every ringing lamp on every frame, which on a board with
    // 150 ringing cards delayed lamp changes by tens of ms (bench/web_panel_load.py).
    this.ringingViews = new Set();
    this.blinkOn = false;
    this.blinkInterval = setInterval(() => this.blink(), 500);
    this.tabButtons = new Map();
    this._renderTabs();
  }

  // ----- structure ---------------------------------------------------------------

  /** The panels the client may see (welcome.panels), in that order. */
  setPanels(names) {
    const keep = new Set(names);
    for (const [name, panel] of this.panels) {
      if (!keep.has(name)) {
        panel.section.remove();
        for (const m of panel.members.values()) { this.timed.delete(m.view); this.ringingViews.delete(m.view); }
        this.panels.delete(name);
      }
    }
    for (const name of names) {
      let panel = this.panels.get(name);
      if (!panel) {
        panel = this._newPanel(name);
        this.panels.set(name, panel);
      }
      this.els.board.appendChild(panel.section); // keeps welcome order
    }
    if (this.view !== 'all' && !this.panels.has(this.view)) this.view = 'all';
    this.els.noPanels.hidden = this.panels.size > 0;
    this._renderTabs();
    this._applyView();
  }

  _newPanel(name) {
    const section = el('section', 'panel');
    section.dataset.panel = name;
    section.dataset.seq = '';
    section.classList.add('loading');
    const h2 = el('h2', 'panel-title');
    const title = el('span', 'panel-name', name);
    const count = el('span', 'panel-count');
    const status = el('span', 'panel-status', 'Loading\u2026');
    h2.append(title, count, status);
    const grid = el('ul', 'grid');
    grid.setAttribute('aria-label', `Panel ${name}`);
    const empty = el('p', 'empty', 'No member matches the filter.');
    empty.hidden = true;
    section.append(h2, grid, empty);
    section.id = `panel-${name.replace(/[^A-Za-z0-9_-]/g, '_')}`;
    return {
      name, section, grid, empty, count, status,
      seq: null, rights: {}, members: new Map(), loaded: false, stale: false,
      error: null, ringing: 0, visible: 0,
    };
  }

  /** The monitored devices (welcome.monitors). */
  setMonitors(monitors) {
    const list = Array.isArray(monitors) ? monitors : [];
    const keep = new Set(list.map((m) => String(m.device)));
    for (const [id, d] of this.devices) {
      if (!keep.has(id)) {
        d.view.li.remove();
        this.timed.delete(d.view);
        this.ringingViews.delete(d.view);
        this.devices.delete(id);
      }
    }
    for (const mon of list) {
      const id = String(mon.device);
      let d = this.devices.get(id);
      if (!d) {
        d = {
          key: id, id, display: null, number: null, lamp: 'unknown', calls: [],
          rights: {}, seq: null, epoch: -1, tRecv: 0, pickup: null, loaded: false, stale: false,
          view: new CardView('device', id),
        };
        d.display = `Line ${id}`;
        d.number = id;
        d.search = searchKey(d);
        this.devices.set(id, d);
      }
      d.monitor = { clip: !!mon.clip, pickup: !!mon.pickup };
      this.els.monitorGrid.appendChild(d.view.li);
      this._markDirty(d);
    }
    this.els.monitors.hidden = this.devices.size === 0;
    this._applyFilterAll();
  }

  // ----- model updates ---------------------------------------------------------

  _newMember(panel, client) {
    const m = {
      key: client, panel: panel.name, display: client, number: null, lamp: 'unknown', calls: [],
      presence: null, logged_in: null, seq: null, epoch: -1, tRecv: 0, pickup: null,
      view: new CardView('member', client),
    };
    m.search = searchKey(m);
    return m;
  }

  _setLamp(panel, m, lamp) {
    const next = normLamp(lamp);
    if (panel) {
      if (m.lamp === 'ringing' && next !== 'ringing') panel.ringing--;
      if (m.lamp !== 'ringing' && next === 'ringing') panel.ringing++;
    }
    m.lamp = next;
  }

  /** Fields of a member object from a snapshot (full: absent presence means no right). */
  _applyMemberFull(panel, m, sm) {
    if (sm.display !== undefined) m.display = sm.display;
    if (sm.number !== undefined) m.number = sm.number;
    this._setLamp(panel, m, sm.lamp);
    m.calls = Array.isArray(sm.calls) ? sm.calls : [];
    m.presence = sm.presence || null;
    m.logged_in = sm.logged_in === undefined ? null : sm.logged_in;
    m.search = searchKey(m);
  }

  applySnapshot(msg) {
    if (msg.panel !== undefined && msg.panel !== null) this._panelSnapshot(msg);
    else if (msg.device !== undefined && msg.device !== null) this._deviceSnapshot(msg);
  }

  _panelSnapshot(msg) {
    const panel = this.panels.get(msg.panel);
    if (!panel) return;
    const seq = toSeq(msg.seq);
    const now = performance.now();
    if (msg.rights) panel.rights = msg.rights;
    const partial = msg.since !== undefined && msg.since !== null;
    const members = Array.isArray(msg.members) ? msg.members : [];
    if (partial) {
      // Only the members that changed after `since`: merge.
      for (const sm of members) {
        if (!sm || sm.client === undefined) continue;
        const key = String(sm.client);
        let m = panel.members.get(key);
        if (m && m.seq !== null && seq !== null && m.seq > seq) continue; // we have newer
        if (!m) {
          m = this._newMember(panel, key);
          panel.members.set(key, m);
          panel.grid.appendChild(m.view.li);
        }
        this._applyMemberFull(panel, m, sm);
        m.seq = seq;
        m.epoch = this.epoch;
        m.tRecv = now;
        this._markDirty(m);
      }
      if (seq !== null && (panel.seq === null || seq > panel.seq)) panel.seq = seq;
    } else {
      // Complete: replace. A member that already got a newer lamp on this very
      // connection (lamp raced ahead of the snapshot) keeps it.
      const next = new Map();
      let maxSeq = seq;
      for (const sm of members) {
        if (!sm || sm.client === undefined) continue;
        const key = String(sm.client);
        let m = panel.members.get(key);
        if (m && m.epoch === this.epoch && m.seq !== null && seq !== null && m.seq > seq) {
          next.set(key, m);
          if (maxSeq === null || m.seq > maxSeq) maxSeq = m.seq;
          continue;
        }
        if (!m) m = this._newMember(panel, key);
        this._applyMemberFull(panel, m, sm);
        m.seq = seq;
        m.epoch = this.epoch;
        m.tRecv = now;
        next.set(key, m);
        this._markDirty(m);
      }
      for (const [key, m] of panel.members) {
        if (!next.has(key)) {
          m.view.li.remove();
          this.timed.delete(m.view);
          this.ringingViews.delete(m.view);
        }
      }
      panel.members = next;
      panel.ringing = 0;
      for (const m of next.values()) if (m.lamp === 'ringing') panel.ringing++;
      // DOM order = snapshot order (appendChild moves existing nodes).
      const frag = document.createDocumentFragment();
      for (const m of next.values()) frag.appendChild(m.view.li);
      panel.grid.appendChild(frag);
      panel.seq = maxSeq;
    }
    panel.loaded = true;
    panel.stale = false;
    panel.error = null;
    this.dirtyPanels.add(panel);
    this._applyFilterPanel(panel);
    this._schedule();
  }

  _deviceSnapshot(msg) {
    const d = this.devices.get(String(msg.device));
    if (!d) return;
    const seq = toSeq(msg.seq);
    if (msg.rights) d.rights = msg.rights;
    const partial = msg.since !== undefined && msg.since !== null;
    const newer = d.seq !== null && seq !== null && d.seq > seq && (partial || d.epoch === this.epoch);
    if (!newer && msg.lamp !== undefined) {
      this._applyDeviceFields(d, msg);
      d.seq = seq;
      d.epoch = this.epoch;
      d.tRecv = performance.now();
    } else if (!newer && partial && seq !== null && (d.seq === null || seq > d.seq)) {
      d.seq = seq;
    }
    d.loaded = true;
    d.stale = false;
    this._markDirty(d);
  }

  _applyDeviceFields(d, msg) {
    this._setLamp(null, d, msg.lamp);
    if (msg.calls !== undefined) d.calls = Array.isArray(msg.calls) ? msg.calls : [];
    if (msg.name) d.display = msg.name;
    else if (msg.display) d.display = msg.display;
    if (msg.number !== undefined && msg.number !== null) d.number = msg.number;
    d.search = searchKey(d);
  }

  /** A live `lamp` message. Returns false when it was ignored as older than what we show. */
  applyLamp(msg) {
    this.h.received++;
    const seq = toSeq(msg.seq);
    const now = performance.now();
    if (this.h.trace) {
      // Measurements only (set window.__blf.trace = [] to turn on): arrival of each lamp frame.
      const c = Array.isArray(msg.calls) && msg.calls.length ? msg.calls[0] : null;
      const key = msg.panel != null ? `${msg.panel}/${msg.member}` : `device:${msg.device}`;
      this.h.trace.push([now, key, seq, msg.lamp, c ? c.remote : null]);
    }
    if (msg.panel !== undefined && msg.panel !== null) {
      const panel = this.panels.get(msg.panel);
      if (!panel || msg.member === undefined) return false;
      const key = String(msg.member);
      let m = panel.members.get(key);
      if (m && m.seq !== null && seq !== null && seq < m.seq) {
        this.h.ignored++;
        return false;
      }
      if (!m) {
        m = this._newMember(panel, key);
        panel.members.set(key, m);
        panel.grid.appendChild(m.view.li);
      }
      if (msg.lamp !== undefined) this._setLamp(panel, m, msg.lamp);
      if (msg.calls !== undefined) m.calls = Array.isArray(msg.calls) ? msg.calls : [];
      if (msg.display !== undefined) m.display = msg.display;
      if (msg.number !== undefined) m.number = msg.number;
      if (msg.presence !== undefined) m.presence = msg.presence;
      if (msg.logged_in !== undefined) m.logged_in = msg.logged_in;
      if (msg.display !== undefined || msg.number !== undefined) {
        m.search = searchKey(m);
        this._applyFilterMember(panel, m);
      }
      m.seq = seq;
      m.epoch = this.epoch;
      m.tRecv = now;
      if (seq !== null && (panel.seq === null || seq > panel.seq)) panel.seq = seq;
      this.dirtyPanels.add(panel);
      this._markDirty(m);
      return true;
    }
    if (msg.device !== undefined && msg.device !== null) {
      const d = this.devices.get(String(msg.device));
      if (!d) return false;
      if (d.seq !== null && seq !== null && seq < d.seq) {
        this.h.ignored++;
        return false;
      }
      this._applyDeviceFields(d, msg);
      d.seq = seq;
      d.epoch = this.epoch;
      d.tRecv = now;
      this._markDirty(d);
      return true;
    }
    return false;
  }

  /** Connection lost (true) or back (false). Stale items stay stale until their snapshot. */
  setStale(stale) {
    this.stale = stale;
    if (stale) {
      for (const p of this.panels.values()) { p.stale = true; this.dirtyPanels.add(p); }
      for (const d of this.devices.values()) { d.stale = true; this._markDirty(d); }
    }
    this._schedule();
  }

  setPanelError(name, text) {
    const panel = this.panels.get(name);
    if (!panel) return;
    panel.error = text;
    this.dirtyPanels.add(panel);
    this._schedule();
  }

  /** Pickup feedback at the lamp: state pending|dial|taken|lost|none|error, cleared after
   *  ttlMs. `dial`: the string the user's phone must dial (shown emphasised in the text). */
  setPickup(target, state, text, ttlMs = 0, dial = '') {
    const m = this.lookup(target);
    if (!m) return;
    if (m.pickupTimer) clearTimeout(m.pickupTimer);
    m.pickupTimer = null;
    m.pickup = state ? { state, text, dial } : null;
    if (state && ttlMs > 0) {
      m.pickupTimer = setTimeout(() => {
        m.pickup = null;
        m.pickupTimer = null;
        this._markDirty(m);
      }, ttlMs);
    }
    this._markDirty(m);
  }

  /** target: {panel, member} or {device} -> model */
  lookup(target) {
    if (!target) return null;
    if (target.device !== undefined) return this.devices.get(String(target.device)) || null;
    const panel = this.panels.get(target.panel);
    return panel ? panel.members.get(String(target.member)) || null : null;
  }

  /** What a card element stands for, and whether it may be picked up now. */
  targetOf(li) {
    if (!li) return null;
    if (li.dataset.device !== undefined) {
      const d = this.devices.get(li.dataset.device);
      if (!d) return null;
      return { target: { device: d.id }, model: d, canPickup: this._devicePickup(d) };
    }
    const section = li.closest('section.panel');
    if (!section) return null;
    const panel = this.panels.get(section.dataset.panel);
    const m = panel && panel.members.get(li.dataset.member);
    if (!m) return null;
    return { target: { panel: panel.name, member: m.key }, model: m, canPickup: this._memberPickup(panel, m) };
  }

  /** The panel grants pickup, and it is not the watcher's own card (its own phone rings). */
  _memberPickup(panel, m) {
    return !!(panel && panel.rights && panel.rights.pickup) && m.key !== this.me;
  }

  _devicePickup(d) {
    if (d.rights && typeof d.rights.pickup === 'boolean') return d.rights.pickup && !!(d.monitor && d.monitor.pickup);
    return !!(d.monitor && d.monitor.pickup);
  }

  /** since values for resubscribing: last seq seen per panel / device. */
  sinceFor(target) {
    const m = target.device !== undefined ? this.devices.get(String(target.device)) : this.panels.get(target.panel);
    return m && m.loaded && m.seq !== null ? m.seq : null;
  }

  // ----- filter and view -------------------------------------------------------------

  setFilter(q) {
    this.filter = (q || '').trim().toLowerCase();
    this._applyFilterAll();
  }

  _matches(m) {
    return !this.filter || m.search.includes(this.filter);
  }

  _applyFilterMember(panel, m) {
    const hide = !this._matches(m);
    if (m.view.li.hidden !== hide) {
      m.view.li.hidden = hide;
      if (panel) this._applyFilterPanel(panel);
    }
  }

  _applyFilterPanel(panel) {
    let visible = 0;
    for (const m of panel.members.values()) {
      const hide = !this._matches(m);
      if (m.view.li.hidden !== hide) m.view.li.hidden = hide;
      if (!hide) visible++;
    }
    panel.visible = visible;
    panel.empty.hidden = !(this.filter && visible === 0 && panel.members.size > 0);
    this.dirtyPanels.add(panel);
    this._schedule();
  }

  _applyFilterAll() {
    for (const p of this.panels.values()) this._applyFilterPanel(p);
    let shown = 0;
    for (const d of this.devices.values()) {
      d.view.li.hidden = !this._matches(d);
      if (!d.view.li.hidden) shown++;
    }
    this.els.monitors.hidden = shown === 0;
  }

  setView(name) {
    this.view = name === 'all' || this.panels.has(name) ? name : 'all';
    this._applyView();
    this._renderTabs();
  }

  _applyView() {
    for (const p of this.panels.values()) p.section.hidden = !(this.view === 'all' || this.view === p.name);
  }

  _renderTabs() {
    const tabs = this.els.tabs;
    const names = ['all', ...this.panels.keys()];
    const wanted = new Set(names);
    for (const [name, b] of this.tabButtons) {
      if (!wanted.has(name)) { b.remove(); this.tabButtons.delete(name); }
    }
    for (const name of names) {
      let b = this.tabButtons.get(name);
      if (!b) {
        b = el('button', 'tab');
        b.type = 'button';
        b.dataset.view = name;
        const label = el('span', 'tab-label', name === 'all' ? 'All panels' : name);
        const badge = el('span', 'tab-badge');
        badge.hidden = true;
        b.append(label, badge);
        b.addEventListener('click', () => this.setView(name));
        this.tabButtons.set(name, b);
      }
      b.setAttribute('aria-pressed', String(this.view === name));
      tabs.appendChild(b);
    }
    tabs.hidden = this.panels.size < 2;
    this._renderBadges();
  }

  _renderBadges() {
    let total = 0;
    for (const p of this.panels.values()) {
      total += p.ringing;
      const b = this.tabButtons.get(p.name);
      if (b) this._badge(b, p.ringing);
    }
    const all = this.tabButtons.get('all');
    if (all) this._badge(all, total);
  }

  _badge(button, n) {
    const badge = button.lastChild;
    const text = n > 0 ? `${n} ringing` : '';
    if (badge.textContent !== text) {
      badge.textContent = text;
      badge.hidden = !text;
    }
  }

  // ----- rendering ----------------------------------------------------------------

  _markDirty(m) {
    this.dirty.add(m);
    this._schedule();
  }

  _schedule() {
    if (this.flushQueued) return;
    this.flushQueued = true;
    requestAnimationFrame(this._onFrame);
  }

  _ctxFor(m) {
    if (m.view.kind === 'device') {
      const clip = !!(m.monitor && m.monitor.clip);
      return { canPickup: this._devicePickup(m), numberRight: () => clip };
    }
    const panel = this.panels.get(m.panel);
    const rights = (panel && panel.rights) || {};
    const numbers = rights.numbers || 'none';
    return {
      canPickup: this._memberPickup(panel, m),
      numberRight: (dir) => numbers === 'all' || (numbers === 'inbound' && dir === 'in'),
    };
  }

  /** Write every dirty card once. Runs in requestAnimationFrame. */
  flush() {
    this.flushQueued = false;
    const h = this.h;
    h.flushes++;
    const nowSec = Date.now() / 1000;
    const t = performance.now();
    for (const m of this.dirty) {
      const v = m.view;
      v.render(m, this._ctxFor(m));
      if (v.kind === 'device') {
        v.li.classList.toggle('stale', !!m.stale);
        if (m.seq !== null) v.li.dataset.seq = String(m.seq);
      }
      if (v.timers.length) { this.timed.add(v); v.tick(nowSec); } else this.timed.delete(v);
      if (m.lamp === 'ringing') {
        if (!this.ringingViews.has(v)) {
          this.ringingViews.add(v);
          v.lampEl.classList.toggle('blink', this.blinkOn);
        }
      } else if (this.ringingViews.delete(v)) {
        v.lampEl.classList.remove('blink');
      }
      const key = v.kind === 'device' ? `device:${m.id}` : `${m.panel}/${m.key}`;
      h.lastApplied[key] = m.seq;
      h.applied.push([m.seq, m.tRecv, t, key]);
    }
    this.dirty.clear();
    if (h.applied.length > APPLIED_CAP) h.applied.splice(0, h.applied.length - APPLIED_CAP / 2);
    for (const p of this.dirtyPanels) {
      const s = p.seq === null ? '' : String(p.seq);
      if (p.section.dataset.seq !== s) p.section.dataset.seq = s;
      p.section.classList.toggle('stale', p.stale);
      p.section.classList.toggle('loading', !p.loaded);
      p.count.textContent = this.filter
        ? `${p.visible} of ${p.members.size}`
        : `${p.members.size} member${p.members.size === 1 ? '' : 's'}`;
      let status = '';
      if (p.error) status = p.error;
      else if (!p.loaded) status = 'Loading\u2026';
      else if (p.stale) status = 'Not live: last known state';
      if (p.status.textContent !== status) p.status.textContent = status;
      p.section.classList.toggle('has-error', !!p.error);
    }
    if (this.dirtyPanels.size) this._renderBadges();
    this.dirtyPanels.clear();
    h.lastFlushAt = t;
  }

  blink() {
    this.blinkOn = !this.blinkOn;
    for (const v of this.ringingViews) v.lampEl.classList.toggle('blink', this.blinkOn);
  }

  tickTimers() {
    const nowSec = Date.now() / 1000;
    for (const v of this.timed) {
      if (v.li.isConnected && !v.li.hidden) v.tick(nowSec);
    }
  }

  /** Forget everything (log out). */
  clear() {
    for (const p of this.panels.values()) p.section.remove();
    for (const d of this.devices.values()) d.view.li.remove();
    this.panels.clear();
    this.devices.clear();
    this.timed.clear();
    this.ringingViews.clear();
    this.dirty.clear();
    this.dirtyPanels.clear();
    this.view = 'all';
    this._renderTabs();
    this.els.monitors.hidden = true;
  }
}

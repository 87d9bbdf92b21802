// The admin view (clients with admin = true): sources and their health, processes alive,
// every device and member with its lamp, and, for the one selected, why the lamp is what it
// is (the gateway's `explain`: the same story as `blf-gateway explain`). Sessions, rate
// limits and the configuration reload. Speaks the admin requests of docs/admin.md; every
// text goes in with textContent, never as HTML.
import { LAMP_LABEL, normLamp } from './board.js';

const $ = (id) => document.getElementById(id);
const REFRESH_MS = 2000;

function cell(tr, text, cls) {
  const td = document.createElement('td');
  td.textContent = text == null ? '' : String(text);
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}

function fill(tableId, rows, render) {
  const body = $(tableId).tBodies[0];
  body.textContent = '';
  for (const row of rows) {
    const tr = document.createElement('tr');
    render(tr, row);
    body.appendChild(tr);
  }
}

function age(seconds) {
  if (seconds == null) return 'never';
  if (seconds < 60) return `${Math.round(seconds)} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  return `${(seconds / 3600).toFixed(1)} h ago`;
}

function duration(seconds) {
  if (seconds == null) return '';
  if (seconds < 120) return `${Math.round(seconds)} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function clock(t) {
  return new Date(t * 1000).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

const OUTCOME = {
  accepted: 'accepted',
  out_of_order: 'ignored: out of order',
  tombstoned: 'ignored: the call had ended',
  unknown: 'went unknown',
  unknown_device: 'ignored: unknown device',
};

export class AdminView {
  constructor(app) {
    this.app = app;
    this.open = false;
    this.timer = null;
    this.selected = null;        // {device} or {client}
    this.hooks = window.__blf;
    this.hooks.admin = this;
    $('admin-toggle').addEventListener('click', () => (this.open ? this.hide() : this.show()));
    $('admin-reload').addEventListener('click', () => this.reload());
    const pick = (e) => {
      const li = e.target.closest && e.target.closest('li[data-target]');
      if (!li) return;
      if (e.type === 'keydown' && e.key !== 'Enter' && e.key !== ' ') return;
      e.preventDefault();
      this.explain(JSON.parse(li.dataset.target));
    };
    for (const id of ['admin-devices', 'admin-members']) {
      $(id).addEventListener('click', pick);
      $(id).addEventListener('keydown', pick);
    }
  }

  /** After login: offer the view only to admins. */
  setAllowed(allowed) {
    $('admin-toggle').hidden = !allowed;
    if (!allowed) this.hide();
  }

  show() {
    this.open = true;
    $('admin-toggle').setAttribute('aria-pressed', 'true');
    $('admin-view').hidden = false;
    $('board-view').hidden = true;
    this.refresh();
  }

  hide() {
    this.open = false;
    clearTimeout(this.timer);
    this.timer = null;
    $('admin-toggle').setAttribute('aria-pressed', 'false');
    $('admin-view').hidden = true;
    if (this.app.mode !== 'login') $('board-view').hidden = false;
  }

  _request(msg) {
    const conn = this.app.conn;
    if (!conn || !conn.isOpen) return Promise.reject(Object.assign(new Error('Not connected'), { code: 'closed' }));
    return conn.request(msg);
  }

  _error(e) {
    const box = $('admin-error');
    if (!e) { box.hidden = true; box.textContent = ''; return; }
    box.textContent = e.code === 'forbidden' ? `Not allowed: ${e.message}` : `The gateway did not answer: ${e.message}`;
    box.hidden = false;
  }

  async refresh() {
    clearTimeout(this.timer);
    if (!this.open) return;
    try {
      const ov = await this._request({ type: 'admin_overview' });
      this._error(null);
      this.render(ov);
      if (this.selected) this.explain(this.selected, { quiet: true });
    } catch (e) {
      if (e.code !== 'closed') this._error(e);
    }
    if (this.open) this.timer = setTimeout(() => this.refresh(), REFRESH_MS);
  }

  render(ov) {
    this.hooks.adminOverview = ov;
    $('admin-updated').textContent = `(process ${ov.process}, ${clock(ov.t)})`;
    fill('admin-sources', ov.sources, (tr, s) => {
      tr.dataset.source = s.source;
      cell(tr, s.source);
      cell(tr, s.up ? 'up' : 'down', s.up ? 'ok' : 'bad');
      cell(tr, age(s.last_event_age));
      cell(tr, s.holder == null ? 'nobody' : s.holder);
      cell(tr, s.reconnects);
      cell(tr, s.events);
      cell(tr, s.devices);
    });
    fill('admin-processes', ov.processes, (tr, p) => {
      tr.dataset.process = p.process;
      cell(tr, p.here ? `${p.process} (this one)` : p.process);
      cell(tr, (p.leases || []).join(', ') || '-');
      cell(tr, p.sessions);
      cell(tr, duration(p.uptime));
      cell(tr, `${p.redis_latency_ms} ms`);
      cell(tr, age(p.age));
    });
    $('admin-config-path').textContent = ov.config.path || '(no configuration file)';
    if (ov.config.last_reload && !this.reloading) this._reloadResult(ov.config.last_reload);
    this._lamps('admin-devices', ov.devices.map((d) => ({
      target: { device: d.device }, key: `device:${d.device}`, lamp: d.lamp,
      title: `${d.device} ${d.name || ''}`.trim(), detail: `${d.source}${d.calls ? `, ${d.calls} call${d.calls > 1 ? 's' : ''}` : ''}`,
    })));
    this._lamps('admin-members', ov.members.map((m) => ({
      target: { client: m.client }, key: `client:${m.client}`, lamp: m.lamp,
      title: m.display === m.client ? m.client : `${m.display} (${m.client})`, detail: m.admin ? 'admin' : '',
    })));
    fill('admin-sessions', ov.sessions, (tr, s) => {
      tr.dataset.client = s.client;
      cell(tr, s.client);
      cell(tr, s.address);
      cell(tr, s.subscriptions.join(', ') || '-');
      cell(tr, s.outbox);
      cell(tr, s.batch ? 'yes' : 'no');
      cell(tr, `${s.tokens} of ${ov.rate_limits.burst}`);
    });
    const rl = ov.rate_limits;
    $('admin-limits-summary').textContent =
      `${rl.messages_per_second} messages/s per connection (burst ${rl.burst}), ` +
      `${rl.login_attempts_per_minute} login attempts/min per address; ` +
      `${rl.client_messages_per_second} messages/s and ${rl.client_changes_per_second} changes/s per client; ` +
      `${rl.rate_limited_total} message(s) refused as too many so far; ` +
      `connections closed: ${rl.flood_closed_total} for flooding, ${rl.login_timeouts_total} for no login in ` +
      `${rl.login_timeout_seconds} s, ${rl.connections_refused_total} refused (over ${rl.max_connections_per_address} from one address).`;
    const rows = [
      ...rl.login_attempts.map((a) => ({ who: a.address, what: 'failed logins, last minute', n: a.last_minute, limited: a.limited })),
      ...rl.failed_logins.map((f) => ({ who: f.client, what: 'failed logins (5 min window)', n: f.failures, limited: f.failures >= 10 })),
    ];
    fill('admin-limits', rows, (tr, r) => {
      cell(tr, r.who); cell(tr, r.what); cell(tr, r.n);
      cell(tr, r.limited ? 'yes' : 'no', r.limited ? 'bad' : '');
    });
  }

  _lamps(listId, items) {
    const ul = $(listId);
    ul.textContent = '';
    for (const it of items) {
      const li = document.createElement('li');
      const lamp = normLamp(it.lamp);
      li.className = 'admin-lamp';
      li.dataset.target = JSON.stringify(it.target);
      li.dataset.key = it.key;
      li.dataset.lamp = lamp;
      li.tabIndex = 0;
      li.setAttribute('role', 'button');
      li.setAttribute('aria-label', `${it.title}: ${LAMP_LABEL[lamp]}. Show why.`);
      const sel = this.selected && JSON.stringify(this.selected) === li.dataset.target;
      if (sel) li.setAttribute('aria-current', 'true');
      const dot = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
      dot.setAttribute('class', 'lamp-icon');
      dot.setAttribute('aria-hidden', 'true');
      const use = document.createElementNS('http://www.w3.org/2000/svg', 'use');
      use.setAttribute('href', `#i-${lamp}`);
      dot.appendChild(use);
      const name = document.createElement('span');
      name.className = 'admin-lamp-name';
      name.textContent = it.title;
      const label = document.createElement('span');
      label.className = 'admin-lamp-label';
      label.textContent = LAMP_LABEL[lamp] + (it.detail ? ` \u00b7 ${it.detail}` : '');
      li.append(dot, name, label);
      ul.appendChild(li);
    }
  }

  async explain(target, { quiet = false } = {}) {
    this.selected = target;
    for (const li of document.querySelectorAll('#admin-view li[data-target]')) {
      if (li.dataset.target === JSON.stringify(target)) li.setAttribute('aria-current', 'true');
      else li.removeAttribute('aria-current');
    }
    let e;
    try {
      e = await this._request({ type: 'explain', ...target });
    } catch (err) {
      if (!quiet) this._error(err);
      return;
    }
    if (JSON.stringify(this.selected) !== JSON.stringify(target)) return;  // another was chosen
    this.hooks.lastExplanation = e;
    const box = $('admin-explain');
    box.hidden = false;
    box.dataset.kind = e.kind;
    box.dataset.target = e.kind === 'device' ? e.device : e.client;
    $('admin-explain-title').textContent = e.kind === 'device'
      ? `Why device ${e.device} is ${LAMP_LABEL[normLamp(e.lamp)].toLowerCase()}`
      : `Why ${e.display}'s lamp is ${LAMP_LABEL[normLamp(e.lamp)].toLowerCase()}`;
    const story = $('admin-story');
    story.textContent = '';
    for (const line of e.story) {
      const li = document.createElement('li');
      li.textContent = line;
      if (/^\s/.test(line)) li.className = 'report';
      else if (line.startsWith('Now:')) li.className = 'now';
      story.appendChild(li);
    }
    const records = e.kind === 'device'
      ? e.records.map((r) => [e.device, r])
      : [...e.devices.flatMap((d) => d.records.map((r) => [d.device, r])),
        ...e.softphone_records.map((r) => ['softphone', r])];
    records.sort((a, b) => a[1].t - b[1].t);
    fill('admin-records', records, (tr, [where, r]) => {
      tr.dataset.outcome = r.outcome;
      cell(tr, clock(r.t));
      cell(tr, where);
      cell(tr, r.conn ? `${r.source} (${r.conn})` : r.source);
      cell(tr, r.call || '');
      cell(tr, r.phase || r.kind);
      cell(tr, r.withheld ? 'withheld' : r.hidden ? 'hidden' : (r.remote || r.remote_name || ''));
      cell(tr, `${OUTCOME[r.outcome] || r.outcome}${r.outcome === 'accepted' && !r.changed ? ', nothing new' : ''}: ${r.reason}`);
      cell(tr, r.lamp || '');
    });
    if (!quiet) box.focus();
  }

  async reload() {
    const btn = $('admin-reload');
    btn.disabled = true;
    this.reloading = true;
    $('admin-reload-result').textContent = 'Reading the configuration\u2026';
    try {
      const r = await this._request({ type: 'admin_reload' });
      this._reloadResult(r);
    } catch (e) {
      const out = $('admin-reload-result');
      out.dataset.ok = 'false';
      out.textContent = `Not reloaded: ${e.message}`;
    } finally {
      btn.disabled = false;
      this.reloading = false;
    }
  }

  _reloadResult(r) {
    const out = $('admin-reload-result');
    out.textContent = '';
    out.dataset.ok = String(!!r.ok);
    const head = document.createElement('p');
    head.textContent = r.ok
      ? `${clock(r.t)}: ${r.changed ? 'applied' : 'no change'}.`
      : `${clock(r.t)}: refused, the running gateway keeps its last good configuration:`;
    out.appendChild(head);
    if (!r.ok && Array.isArray(r.errors)) {
      const ul = document.createElement('ul');
      ul.className = 'reload-errors';
      for (const err of r.errors) {
        const li = document.createElement('li');
        li.textContent = err;
        ul.appendChild(li);
      }
      out.appendChild(ul);
    }
  }
}

// Alarm console (security desk): live alarms with sound and a visual cue by severity, emergencies
// above hazards, drills marked, filters, acknowledge with a comment, resolve, history, camera.
import { t, loc, fmtTime } from './i18n.js';
import { api, h, fill, can, session, orgName, loadOrgNames, ApiFailure } from './lib.js';
import { playAlarm } from './sound.js';

const SEVERITY_RANK = { info: 0, minor: 1, major: 2, critical: 3, fatal: 4 };
const OPEN = new Set(['raised', 'acknowledged']);

let root = null;
let alerts = new Map(); // id → alert
let fresh = new Set(); // ids that arrived live and are not acknowledged yet
let expanded = new Map(); // id → 'ack' | 'resolve' | 'history'
let histories = new Map();
let drafts = new Map(); // id → comment being typed (kept across re-renders)
let source = null;
let filter = { site: '', building: '', category: '', state: 'open' };
let sites = [];
let bannerTimer = null;

function sortKey(a) {
  return [
    OPEN.has(a.state) ? 0 : 1,
    a.category === 'emergency' ? 0 : 1,
    -(SEVERITY_RANK[a.severity] ?? 0),
    -(a.raisedAt ?? 0),
  ];
}
function compare(a, b) {
  const x = sortKey(a);
  const y = sortKey(b);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return x[i] - y[i];
  return 0;
}

function matches(a) {
  if (filter.site && !(a.orgPath === filter.site || a.orgPath.startsWith(filter.site + '/'))) return false;
  if (filter.building && (a.building ?? '') !== filter.building) return false;
  if (filter.category && a.category !== filter.category) return false;
  if (filter.state === 'open' && !OPEN.has(a.state)) return false;
  if (filter.state && filter.state !== 'open' && a.state !== filter.state) return false;
  return true;
}

function query() {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(filter)) if (v) p.set(k, v);
  p.set('limit', '200');
  return p.toString();
}

async function load() {
  const r = await api('GET', `/api/alerts?${query()}`);
  alerts = new Map(r.alerts.map((a) => [String(a.id), a]));
  render();
}

let liveOn = false;
let lastCue = null;

function setLive(on) {
  liveOn = on;
  const el = document.getElementById('live');
  el.hidden = false;
  el.className = on ? 'live on' : 'live off';
  el.textContent = on ? t('live.on') : t('live.off');
}

function connect() {
  source?.close();
  source = new EventSource('/api/stream');
  source.addEventListener('hello', () => setLive(true));
  source.addEventListener('logout', () => {
    source?.close();
    window.dispatchEvent(new Event('xiaoan:unauthenticated'));
  });
  source.addEventListener('alert', (ev) => {
    const { change, alert } = JSON.parse(ev.data);
    const id = String(alert.id);
    const known = alerts.get(id);
    if (!matches(alert)) {
      if (known) alerts.delete(id);
      render();
      return;
    }
    alerts.set(id, alert);
    if (!known && alert.state === 'raised') {
      fresh.add(id);
      cue(alert);
    }
    if (alert.state !== 'raised') fresh.delete(id);
    render();
  });
  source.onerror = () => setLive(false);
  source.onopen = () => setLive(true);
}

function cue(alert) {
  playAlarm(alert.category);
  lastCue = alert;
  showBanner(alert);
}

function showBanner(alert) {
  const banner = document.getElementById('banner');
  banner.hidden = false;
  banner.className = `banner ${alert.category}${alert.drill ? ' drill' : ''}`;
  fill(banner,
    h('strong', {}, `${t('alarms.new')} · ${t('category.' + alert.category)}`),
    alert.drill ? h('span', { class: 'badge drill' }, t('drill')) : null,
    ' ',
    loc(alert.title),
    ' · ',
    orgName(alert.orgPath),
    ' · ',
    alert.deviceId,
  );
  if (alert !== lastCue) return;
  clearTimeout(bannerTimer);
  bannerTimer = setTimeout(() => {
    banner.hidden = true;
    lastCue = null;
  }, alert.category === 'emergency' ? 30000 : 10000);
}

function filters() {
  const sel = (name, options) =>
    h('label', {}, h('span', {}, t('filter.' + name)),
      h('select', { name, id: `filter-${name}`, onchange: (e) => { filter[name] = e.target.value; load(); } },
        options.map(([v, label]) => h('option', { value: v, selected: filter[name] === v }, label))));
  return h('form', { class: 'filters', onsubmit: (e) => { e.preventDefault(); filter.building = e.target.building.value.trim(); load(); } },
    sel('site', [['', t('filter.all')], ...sites.map((s) => [s.path, loc({ zh: s.nameZh, en: s.nameEn || s.nameZh })])]),
    h('label', {}, h('span', {}, t('filter.building')), h('input', { name: 'building', id: 'filter-building', value: filter.building, maxlength: 100 })),
    sel('category', [['', t('filter.all')], ['emergency', t('category.emergency')], ['hazard', t('category.hazard')]]),
    sel('state', [['open', t('filter.open')], ['', t('filter.all')], ['raised', t('state.raised')], ['acknowledged', t('state.acknowledged')], ['resolved', t('state.resolved')], ['cleared', t('state.cleared')]]),
    h('button', { type: 'submit' }, t('filter.apply')),
  );
}

function actionForm(a, kind) {
  const id = String(a.id);
  const input = h('textarea', { name: 'comment', rows: 2, maxlength: 1000, placeholder: t('alarm.commentPlaceholder'), class: 'comment',
    oninput: (e) => drafts.set(id, e.target.value) });
  input.value = drafts.get(id) ?? '';
  const err = h('p', { class: 'error', role: 'alert' });
  const form = h('form', { class: 'action-form', onsubmit: async (e) => {
    e.preventDefault();
    try {
      const r = await api('POST', `/api/alerts/${encodeURIComponent(a.id)}/${kind}`, { comment: input.value });
      alerts.set(String(a.id), r.alert);
      fresh.delete(id);
      expanded.delete(id);
      histories.delete(id);
      drafts.delete(id);
      render();
    } catch (x) {
      err.textContent = x instanceof ApiFailure ? x.text() : t('error.network');
    }
  } },
  h('label', {}, h('span', {}, t('alarm.comment')), input),
  h('button', { type: 'submit', class: 'primary' }, t('alarm.submit')),
  h('button', { type: 'button', onclick: () => { expanded.delete(id); drafts.delete(id); render(); } }, t('alarm.cancel')),
  err);
  return form;
}

function historyView(a) {
  const id = String(a.id);
  const list = histories.get(id);
  if (!list) {
    api('GET', `/api/alerts/${encodeURIComponent(id)}/history`).then((r) => { histories.set(id, r.history); render(); }).catch(() => {});
    return h('p', { class: 'muted' }, '…');
  }
  return h('ol', { class: 'history' }, list.map((e) =>
    h('li', {}, h('time', {}, fmtTime(e.at)), ' ', h('b', {}, historyLabel(e)), e.actor ? ` · ${e.actor}` : '', e.comment ? ` — ${e.comment}` : '')));
}

function historyLabel(e) {
  const labels = {
    raised: ['发生', 'Raised'], worsened: ['升级严重度', 'Worsened'], acknowledged: ['确认', 'Acknowledged'], escalated: ['上报上级', 'Escalated'],
    resolved: ['解除', 'Resolved'], cleared: ['自动恢复', 'Cleared'], action: ['联动', 'Linkage'], attachment: ['附件', 'Attachment'],
  };
  const l = labels[e.action];
  return l ? loc({ zh: l[0], en: l[1] }) : t('state.' + e.toState);
}

function card(a) {
  const id = String(a.id);
  const open = OPEN.has(a.state);
  const classes = ['alarm', a.category, `sev-${a.severity}`, `state-${a.state}`];
  if (a.drill) classes.push('drill');
  if (fresh.has(id)) classes.push('fresh');
  const mode = expanded.get(id);
  return h('article', { class: classes.join(' '), dataset: { id, state: a.state, category: a.category }, 'aria-label': loc(a.title) },
    h('header', {},
      h('span', { class: `badge ${a.category}` }, t('category.' + a.category)),
      h('span', { class: `badge sev sev-${a.severity}` }, t('severity.' + a.severity)),
      a.drill ? h('span', { class: 'badge drill' }, t('drill')) : null,
      h('h3', {}, loc(a.title)),
      h('span', { class: `state-label state-${a.state}` }, t('state.' + a.state)),
    ),
    h('dl', {},
      h('dt', {}, t('alarm.site')), h('dd', {}, orgName(a.orgPath), a.building ? ` · ${a.building}` : '', a.room ? ` ${a.room}` : ''),
      h('dt', {}, t('alarm.device')), h('dd', {}, a.deviceName ? `${a.deviceName} (${a.deviceId})` : a.deviceId),
      h('dt', {}, t('alarm.raisedAt')), h('dd', {}, fmtTime(a.raisedAt)),
      a.value !== null && a.value !== undefined ? [h('dt', {}, t('alarm.value')), h('dd', {}, String(a.value))] : null,
      a.acknowledgedBy ? [h('dt', {}, t('state.acknowledged')), h('dd', {}, `${a.acknowledgedBy} · ${fmtTime(a.acknowledgedAt)}`)] : null,
      a.resolvedBy ? [h('dt', {}, t('state.resolved')), h('dd', {}, `${a.resolvedBy} · ${fmtTime(a.resolvedAt)}`)] : null,
      a.escalatedTo ? [h('dt', {}, t('alarm.escalated')), h('dd', {}, orgName(a.escalatedTo))] : null,
    ),
    h('div', { class: 'actions' },
      can('alerts.act') && a.state === 'raised' ? h('button', { class: 'primary act-ack', onclick: () => { expanded.set(id, 'ack'); justOpened = id; render(); } }, t('alarm.ack')) : null,
      can('alerts.act') && open ? h('button', { class: 'act-resolve', onclick: () => { expanded.set(id, 'resolve'); justOpened = id; render(); } }, t('alarm.resolve')) : null,
      h('button', { class: 'act-history', onclick: () => { if (mode === 'history') expanded.delete(id); else expanded.set(id, 'history'); render(); } }, t('alarm.history')),
      session.features.cameras && can('cameras.view') ? h('button', { class: 'act-camera', onclick: () => openCamera(a) }, t('alarm.camera')) : null,
    ),
    mode === 'ack' ? actionForm(a, 'ack') : null,
    mode === 'resolve' ? actionForm(a, 'resolve') : null,
    mode === 'history' ? historyView(a) : null,
  );
}

async function openCamera(a) {
  const { showCamera } = await import('./camera.js');
  showCamera(a);
}

function render() {
  if (!root) return;
  const list = [...alerts.values()].filter(matches).sort(compare);
  // Keep the comment box someone is typing in focused across a live re-render.
  const typing = document.activeElement?.closest?.('article.alarm')?.dataset.id;
  fill(root, 
    h('div', { class: 'page-head' }, h('h1', {}, t('alarms.title')), h('span', { class: 'count' }, String(list.filter((a) => OPEN.has(a.state)).length))),
    filters(),
    list.length ? h('div', { class: 'alarm-list', id: 'alarm-list' }, list.map(card)) : h('p', { class: 'empty' }, t('alarms.none')),
  );
  const box = root.querySelector(`article.alarm[data-id="${CSS.escape(typing ?? '')}"] textarea`) ?? (justOpened && root.querySelector(`article.alarm[data-id="${CSS.escape(justOpened)}"] textarea`));
  justOpened = null;
  box?.focus();
}
let justOpened = null;

export async function mount(el) {
  root = el;
  const nodes = await loadOrgNames();
  sites = nodes.filter((n) => n.level === 'school' || n.level === 'college' || n.level === 'county');
  render();
  connect();
  await load();
}
export function rerender() {
  render();
  setLive(liveOn);
  if (lastCue && !document.getElementById('banner').hidden) {
    const keep = lastCue;
    lastCue = null; // re-draw the text without restarting its timer
    showBanner(keep);
    lastCue = keep;
  }
}
export function unmount() {
  source?.close();
  source = null;
  root = null;
  clearTimeout(bannerTimer);
  lastCue = null;
  document.getElementById('banner').hidden = true;
  document.getElementById('live').hidden = true;
}

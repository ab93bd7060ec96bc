// Devices page (technicians): state, last seen, trouble counters per site and building; enrol,
// test, remove, discover and bulk import through commands to the school's gateway.
import { t, loc, fmtTime } from './i18n.js';
import { api, h, fill, can, orgName, loadOrgNames, ApiFailure } from './lib.js';

let root = null;
let devices = [];
let trouble = {};
let gateways = [];
let profiles = [];
let sites = [];
let filter = { site: '', building: '', state: '' };
let notice = null;
let timer = null;
let testResults = new Map();
let discovered = [];
let forms = null; // the enrol and import forms, built once so typing survives re-renders

const errText = (e) => (e instanceof ApiFailure ? e.text() + (e.error?.problems ? '\n' + e.error.problems.join('\n') : '') : t('error.network'));

async function load() {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(filter)) if (v) p.set(k, v);
  try {
    const [d, tr, g] = await Promise.all([
      api('GET', `/api/devices?${p}`),
      api('GET', `/api/devices/trouble?${filter.site ? `site=${encodeURIComponent(filter.site)}` : ''}`),
      api('GET', '/api/gateways'),
    ]);
    // Trouble first: offline, degraded, unknown, then online; within that by site, building, id.
    const rank = { offline: 0, degraded: 1, unknown: 2, online: 3 };
    devices = d.devices.sort((a, b) => (rank[a.state] ?? 2) - (rank[b.state] ?? 2) || a.orgPath.localeCompare(b.orgPath)
      || String(a.building ?? a.location ?? '').localeCompare(String(b.building ?? b.location ?? '')) || a.deviceId.localeCompare(b.deviceId));
    trouble = tr.counts;
    gateways = g.gateways;
  } catch (e) {
    notice = { bad: true, text: errText(e) };
  }
  render();
}

function troubleText(d) {
  const c = trouble[`${d.gatewayId}/${d.deviceId}`];
  if (!c) return '0';
  return Object.entries(c).map(([k, n]) => `${k} ×${n}`).join(', ');
}

async function command(method, path, body, okText) {
  try {
    const r = await api(method, path, body);
    const res = r.result ?? r;
    notice = { bad: res.ok === false, text: `${okText}: ${res.message ?? 'ok'}` };
    if (r.results) notice = { bad: r.results.some((x) => !x.ok), text: r.results.map((x) => `${x.id}: ${x.ok ? '✓' : '✗'} ${x.message ?? ''}`).join('\n') };
    return r;
  } catch (e) {
    notice = { bad: true, text: errText(e) };
    return null;
  } finally {
    render();
    setTimeout(load, 1500);
  }
}

function enrolForm() {
  const field = (name, label, attrs = {}) => h('label', {}, h('span', {}, label), h('input', { name, id: `enrol-${name}`, ...attrs }));
  const gw = h('select', { name: 'gateway', id: 'enrol-gateway' }, gateways.map((g) => h('option', { value: g.id }, `${g.id} · ${orgName(g.orgPath)}`)));
  const profile = profiles.length
    ? h('select', { name: 'profile', id: 'enrol-profile' }, profiles.map((p) => h('option', { value: p.id }, `${loc(p.description)} (${p.id})`)))
    : h('input', { name: 'profile', id: 'enrol-profile', required: true, placeholder: 'temp-humidity-generic' });
  return h('form', { class: 'panel', id: 'enrol-form', onsubmit: async (e) => {
    e.preventDefault();
    const f = e.target;
    const device = {};
    for (const k of ['id', 'url', 'name', 'building', 'room', 'password']) if (f[k].value.trim()) device[k] = f[k].value.trim();
    device.profile = f.profile.value.trim();
    const r = await command('POST', `/api/gateways/${encodeURIComponent(f.gateway.value)}/devices`, { device }, t('devices.sent'));
    if (r) f.reset();
  } },
  h('h2', {}, t('devices.enrol')),
  h('div', { class: 'form-row' },
    h('label', {}, h('span', {}, t('devices.gateway')), gw),
    field('id', t('devices.id'), { required: true, maxlength: 64, size: 12 }),
    h('label', {}, h('span', {}, t('devices.profile')), profile),
    field('url', t('devices.address'), { required: true, size: 30, placeholder: 'modbus-tcp://192.168.1.20:502?unit=1' }),
    field('name', t('devices.name'), { size: 14 }),
    field('building', t('devices.building'), { size: 8 }),
    field('room', t('devices.room'), { size: 6 }),
    field('password', 'MQTT 密码 password', { type: 'password', size: 10, autocomplete: 'new-password' }),
    h('button', { class: 'primary', type: 'submit', id: 'enrol-submit' }, t('devices.enrol')),
  ),
  h('div', { class: 'form-row' },
    h('label', {}, h('span', {}, t('devices.discoverProtocol')),
      h('select', { id: 'discover-protocol' }, h('option', { value: 'onvif' }, 'ONVIF 摄像头 cameras'), h('option', { value: 'modbus' }, 'Modbus'))),
    h('label', {}, h('span', {}, t('devices.discoverTarget')),
      h('input', { id: 'discover-target', size: 30, maxlength: 512, placeholder: 'modbus-tcp://192.168.1.20:502 · 192.168.1.30' })),
    h('button', { type: 'button', id: 'discover', onclick: async () => {
      const protocol = root.querySelector('#discover-protocol').value;
      const target = root.querySelector('#discover-target').value.trim();
      const r = await command('POST', `/api/gateways/${encodeURIComponent(gw.value)}/discover`, { protocol, ...(target ? { target } : {}) }, t('devices.discover'));
      discovered = r?.result?.found ?? [];
      render();
    } }, t('devices.discover')),
  ));
}

/** What the last discovery found; "use" puts its address into the enrol form. */
function discoveredList() {
  if (!discovered.length) return null;
  return h('ul', { class: 'panel', id: 'discover-found' }, discovered.map((d) => h('li', {},
    h('code', {}, d.url), ' ',
    d.name ? `${d.name} ` : '', d.hardware ? `(${d.hardware}) ` : '', d.answer ? `${d.answer} ` : '',
    d.enrolled || d.enrolledAs ? h('span', { class: 'muted' }, `${t('devices.already')} ${d.enrolledAs ?? ''}`) : h('button', { type: 'button', class: 'use-found', onclick: () => {
      const u = root.querySelector('#enrol-url');
      if (u) { u.value = d.url; u.focus(); }
    } }, t('devices.useFound')),
  )));
}

/** One line from a live test: verdict, then the values the device gave. */
function testLine(test) {
  const obs = (test.observations ?? []).slice(0, 8).map((o) => (o.kind === 'reading' ? `${o.metric}=${o.value}` : o.type)).join(', ');
  return `${test.ok ? '✓ ' : '✗ '}${test.message ?? ''}${obs ? ` — ${obs}` : ''}`;
}

function importForm() {
  const ta = h('textarea', { id: 'import-csv', rows: 4, cols: 80, placeholder: 'id,profile,url,name,building,room\nsmoke-9,smoke-photoelectric-generic,modbus-tcp://10.0.0.9:502?unit=1,三楼烟感,一号楼,301' });
  return h('form', { class: 'panel', onsubmit: async (e) => {
    e.preventDefault();
    const g = root.querySelector('#enrol-gateway')?.value;
    await command('POST', `/api/gateways/${encodeURIComponent(g)}/import`, { csv: ta.value }, t('devices.import'));
  } }, h('h2', {}, t('devices.import')), h('p', { class: 'muted' }, t('devices.importHint')), ta, h('div', {}, h('button', { type: 'submit', id: 'import-submit' }, t('devices.import'))));
}

function row(d) {
  const key = `${d.gatewayId}/${d.deviceId}`;
  const manage = can('devices.manage');
  const test = testResults.get(key);
  return h('tr', { dataset: { device: d.deviceId, gateway: d.gatewayId, state: d.state } },
    h('td', {}, d.deviceId),
    h('td', {}, d.name || '—'),
    h('td', {}, d.profile),
    h('td', {}, orgName(d.orgPath), d.building || d.location ? ` · ${d.building || d.location}` : '', d.room ? ` ${d.room}` : ''),
    h('td', {}, h('span', { class: `pill ${d.state}` }, t('state.' + d.state))),
    h('td', {}, fmtTime(d.lastSeen)),
    h('td', {}, troubleText(d)),
    h('td', {}, d.gatewayId),
    manage ? h('td', {},
      h('button', { class: 'act-test', onclick: async () => {
        const r = await command('POST', `/api/gateways/${encodeURIComponent(d.gatewayId)}/devices/${encodeURIComponent(d.deviceId)}/test`, {}, `${t('devices.test')} ${d.deviceId}`);
        if (r) testResults.set(key, r.result);
        render();
      } }, t('devices.test')), ' ',
      h('button', { class: 'danger act-remove', onclick: () => confirm(`${t('devices.remove')} ${d.deviceId}?`) && command('POST', `/api/gateways/${encodeURIComponent(d.gatewayId)}/devices/${encodeURIComponent(d.deviceId)}/remove`, {}, `${t('devices.remove')} ${d.deviceId}`) }, t('devices.remove')),
      test ? h('div', { class: test.ok ? 'muted test-result' : 'muted test-result bad' }, testLine(test)) : null,
    ) : null,
  );
}

function render() {
  if (!root) return;
  const manage = can('devices.manage');
  const sel = (name, options) => h('label', {}, h('span', {}, t('filter.' + name)),
    h('select', { id: `dev-filter-${name}`, onchange: (e) => { filter[name] = e.target.value; load(); } }, options.map(([v, l]) => h('option', { value: v, selected: filter[name] === v }, l))));
  const counts = { online: 0, degraded: 0, offline: 0 };
  for (const d of devices) if (d.state in counts) counts[d.state]++;
  fill(root, 
    h('div', { class: 'page-head' }, h('h1', {}, t('devices.title')),
      h('span', { class: 'muted' }, `${t('state.online')} ${counts.online} · ${t('state.degraded')} ${counts.degraded} · ${t('state.offline')} ${counts.offline}`)),
    notice ? h('pre', { class: notice.bad ? 'notice bad' : 'notice', id: 'devices-notice', role: 'status' }, notice.text) : null,
    h('form', { class: 'filters', onsubmit: (e) => { e.preventDefault(); filter.building = e.target.building.value.trim(); load(); } },
      sel('site', [['', t('filter.all')], ...sites.map((s) => [s.path, loc({ zh: s.nameZh, en: s.nameEn || s.nameZh })])]),
      h('label', {}, h('span', {}, t('filter.building')), h('input', { name: 'building', value: filter.building, maxlength: 100 })),
      sel('state', [['', t('filter.all')], ['online', t('state.online')], ['degraded', t('state.degraded')], ['offline', t('state.offline')]]),
      h('button', { type: 'submit' }, t('filter.apply'))),
    devices.length
      ? h('table', { class: 'grid', id: 'device-table' },
        h('thead', {}, h('tr', {}, ['devices.id', 'devices.name', 'devices.profile', 'alarm.site', 'devices.state', 'devices.lastSeen', 'devices.trouble', 'devices.gateway'].map((k) => h('th', {}, t(k))), manage ? h('th', {}, '') : null)),
        h('tbody', {}, devices.map(row)))
      : h('p', { class: 'empty' }, t('devices.none')),
    manage && gateways.length ? (forms ??= [enrolForm(), importForm()]) : null,
    manage ? discoveredList() : null,
  );
}

export async function mount(el) {
  root = el;
  notice = null;
  forms = null;
  discovered = [];
  const nodes = await loadOrgNames();
  sites = nodes.filter((n) => n.level === 'school' || n.level === 'college' || n.level === 'county');
  try {
    profiles = (await api('GET', '/api/profiles')).profiles;
  } catch {
    profiles = [];
  }
  await load();
  timer = setInterval(() => {
    if (!root?.contains(document.activeElement) || document.activeElement === document.body) load();
  }, 10000);
}
export function rerender() {
  render();
}
export function unmount() {
  clearInterval(timer);
  root = null;
}

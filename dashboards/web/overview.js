// Regional overview (county, city, province): open hazards and emergencies by region, devices
// online, alerts over time, drill-down to the school, accident statistics as CSV.
import { t, loc } from './i18n.js';
import { api, h, fill, session, ApiFailure } from './lib.js';

let root = null;
let region = null; // org path shown (null = the user's own)
let data = null;
let error = null;

async function load() {
  try {
    data = await api('GET', `/api/overview${region ? `?region=${encodeURIComponent(region)}` : ''}`);
    error = null;
  } catch (e) {
    error = e instanceof ApiFailure ? e.text() : t('error.network');
  }
  render();
}

function trendChart(trend) {
  const W = 900, H = 200, P = 30;
  const max = Math.max(1, ...trend.map((d) => d.emergency + d.hazard));
  const bw = (W - P * 2) / trend.length;
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.setAttribute('class', 'chart');
  svg.setAttribute('id', 'trend-chart');
  const el = (tag, attrs, text) => {
    const e = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    svg.append(e);
    return e;
  };
  el('line', { x1: P, y1: H - P, x2: W - P, y2: H - P, stroke: '#999' });
  trend.forEach((d, i) => {
    const x = P + i * bw + 1;
    const he = ((H - P * 2) * d.emergency) / max;
    const hh = ((H - P * 2) * d.hazard) / max;
    el('rect', { x, y: H - P - hh, width: Math.max(1, bw - 2), height: hh, fill: '#c76a00' }).append(Object.assign(document.createElementNS(ns, 'title'), { textContent: `${d.day} ${t('category.hazard')} ${d.hazard}` }));
    el('rect', { x, y: H - P - hh - he, width: Math.max(1, bw - 2), height: he, fill: '#c8102e' }).append(Object.assign(document.createElementNS(ns, 'title'), { textContent: `${d.day} ${t('category.emergency')} ${d.emergency}` }));
    if (i % Math.ceil(trend.length / 10) === 0) el('text', { x, y: H - P + 14 }, d.day.slice(5));
  });
  el('text', { x: 4, y: 14 }, `max ${max}`);
  return svg;
}

function render() {
  if (!root) return;
  if (error) return fill(root, h('div', { class: 'page-head' }, h('h1', {}, t('overview.title'))), h('p', { class: 'notice bad' }, error));
  if (!data) return fill(root, h('p', { class: 'muted' }, '…'));
  const totals = data.regions.reduce((a, r) => ({ e: a.e + r.emergency, hz: a.hz + r.hazard, d: a.d + r.devices, on: a.on + r.devicesOnline }), { e: 0, hz: 0, d: 0, on: 0 });
  const today = new Date();
  const iso = (d) => new Date(d.getTime() + 8 * 3600_000).toISOString().slice(0, 10);
  const fromIn = h('input', { type: 'date', id: 'csv-from', value: iso(new Date(today.getTime() - 30 * 86400_000)) });
  const toIn = h('input', { type: 'date', id: 'csv-to', value: iso(today) });
  const link = h('a', { id: 'csv-link', class: 'drill-link', download: '' }, t('overview.export'));
  const setHref = () => {
    const p = new URLSearchParams();
    if (region) p.set('region', region);
    p.set('from', `${fromIn.value}T00:00:00+08:00`);
    p.set('to', `${toIn.value}T23:59:59+08:00`);
    link.href = `/api/overview/accidents.csv?${p}`;
  };
  fromIn.addEventListener('change', setHref);
  toIn.addEventListener('change', setHref);
  setHref();
  fill(root,
    h('div', { class: 'page-head' }, h('h1', {}, t('overview.title'), ' · ', data.region.name ? loc(data.region.name) : data.region.path),
      data.canGoUp ? h('button', { id: 'overview-up', onclick: () => { const p = region.split('/'); p.pop(); region = p.join('/') === session.user.orgPath ? null : p.join('/'); load(); } }, '↑ ' + t('overview.up')) : null),
    h('div', { class: 'cards' },
      h('div', { class: 'stat emergency' }, h('div', {}, t('overview.openEmergencies')), h('div', { class: 'n', id: 'total-emergencies' }, String(totals.e))),
      h('div', { class: 'stat hazard' }, h('div', {}, t('overview.openHazards')), h('div', { class: 'n', id: 'total-hazards' }, String(totals.hz))),
      h('div', { class: 'stat' }, h('div', {}, t('overview.devicesOnline')), h('div', { class: 'n' }, `${totals.on} / ${totals.d}`))),
    h('div', { class: 'panel spaced' }, h('h2', {}, t('overview.trend')), trendChart(data.trend)),
    h('table', { class: 'grid', id: 'region-table' },
      h('thead', {}, h('tr', {}, [t('overview.region'), t('overview.openEmergencies'), t('overview.openHazards'), t('drill'), t('overview.devicesOnline')].map((x) => h('th', {}, x)))),
      h('tbody', {}, data.regions.map((r) => h('tr', { dataset: { region: r.path } },
        h('td', {}, r.path === data.region.path ? (r.name ? loc(r.name) : r.path)
          : h('a', { class: 'drill-link', href: '#', onclick: (e) => { e.preventDefault(); region = r.path; load(); } }, r.name ? loc(r.name) : r.path), h('span', { class: 'muted' }, ` ${r.path}`)),
        h('td', { class: 'n-emergency' }, String(r.emergency)),
        h('td', { class: 'n-hazard' }, String(r.hazard)),
        h('td', {}, String(r.drills)),
        h('td', {}, `${r.devicesOnline} / ${r.devices}`))))),
    h('div', { class: 'panel spaced form-row' },
      h('label', {}, h('span', {}, t('rules.from')), fromIn),
      h('label', {}, h('span', {}, t('rules.to')), toIn),
      link),
  );
}

export async function mount(el) {
  root = el;
  region = null;
  data = null;
  await load();
}
export function rerender() {
  render();
}
export function unmount() {
  root = null;
}

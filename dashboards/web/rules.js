// Rules page (rule authors): thresholds, scope overrides, backtest chart, save with a change note.
import { t, loc, fmtTime } from './i18n.js';
import { api, h, fill, can, session, ApiFailure } from './lib.js';

let root = null;
let rules = [];
let selected = null;
let lastBacktest = null;
let notice = null;
let versions = [];

const errText = (e) => (e instanceof ApiFailure ? e.text() : t('error.network'));

async function load() {
  try {
    const r = await api('GET', '/api/rules');
    rules = r.rules;
    if (!selected && rules.length) selected = rules.find((x) => x.id === 'smoke-sustained')?.id ?? rules[0].id;
  } catch (e) {
    notice = { bad: true, text: errText(e) };
  }
  await loadVersions();
  render();
}

async function loadVersions() {
  if (!selected) return;
  try {
    versions = (await api('GET', `/api/rules/${encodeURIComponent(selected)}/versions`)).versions;
  } catch {
    versions = [];
  }
}

function chart(bt) {
  const W = 760, H = 240, P = 36;
  const max = Math.max(1, ...bt.points.map((p) => p.alerts));
  const bw = (W - P * 2) / bt.points.length;
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.setAttribute('class', 'chart');
  svg.setAttribute('id', 'backtest-chart');
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', `${t('rules.backtest')}: ${bt.param}`);
  const el = (tag, attrs, text) => {
    const e = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    svg.append(e);
    return e;
  };
  el('line', { x1: P, y1: H - P, x2: W - P, y2: H - P, stroke: '#999' });
  el('text', { x: 4, y: 14 }, `${t('rules.alerts')} (max ${max})`);
  bt.points.forEach((p, i) => {
    const bh = ((H - P * 2) * p.alerts) / max;
    const x = P + i * bw + 2;
    const isCurrent = bt.current !== null && Math.abs(p.value - bt.current) < 1e-9;
    const rect = el('rect', { x, y: H - P - bh, width: Math.max(2, bw - 4), height: bh, class: isCurrent ? 'bar current' : 'bar', 'data-value': p.value, 'data-alerts': p.alerts });
    const title = document.createElementNS(ns, 'title');
    title.textContent = `${bt.param} = ${p.value}: ${p.alerts}`;
    rect.append(title);
    el('text', { x: x + bw / 2 - 2, y: H - P - bh - 4, 'text-anchor': 'middle' }, String(p.alerts));
    if (bt.points.length <= 25 || i % Math.ceil(bt.points.length / 25) === 0) el('text', { x: x + bw / 2 - 2, y: H - P + 14, 'text-anchor': 'middle' }, String(p.value));
  });
  el('text', { x: W / 2, y: H - 4, 'text-anchor': 'middle' }, bt.param);
  return svg;
}

function render() {
  if (!root) return;
  const rule = rules.find((r) => r.id === selected);
  const writable = can('rules.write');
  const provinceWide = !session.user.orgPath.includes('/');
  fill(root, 
    h('div', { class: 'page-head' }, h('h1', {}, t('rules.title'))),
    notice ? h('p', { class: notice.bad ? 'notice bad' : 'notice', id: 'rules-notice', role: 'status' }, notice.text) : null,
    h('div', { class: 'panel' },
      h('label', { class: 'form-row' }, h('span', {}, t('nav.rules')),
        h('select', { id: 'rule-select', onchange: async (e) => { selected = e.target.value; lastBacktest = null; notice = null; await loadVersions(); render(); } },
          rules.map((r) => h('option', { value: r.id, selected: r.id === selected }, `${loc(r.name)} (${r.id}) · ${t('category.' + r.category)}`))))),
    rule ? ruleView(rule, writable, provinceWide) : h('p', { class: 'empty' }, t('rules.none')),
  );
}

function ruleView(rule, writable, provinceWide) {
  const paramInputs = Object.entries(rule.params).map(([k, v]) =>
    h('label', {}, h('span', {}, k), h('input', { type: 'number', step: 'any', name: `param-${k}`, 'data-param': k, value: v, disabled: !writable || !provinceWide })));
  const ovRows = h('tbody', { id: 'override-rows' });
  const addOverride = (o) => {
    const tr = h('tr', {},
      h('td', {}, h('input', { class: 'ov-scope', value: o?.orgPath ?? o?.schoolId ?? session.user.orgPath, disabled: !writable, size: 28 })),
      Object.keys(rule.params).map((k) => h('td', {}, h('input', { type: 'number', step: 'any', class: 'ov-param', 'data-param': k, value: o?.params?.[k] ?? '', disabled: !writable, size: 6 }))),
      h('td', {}, writable ? h('button', { type: 'button', onclick: () => tr.remove() }, '×') : null));
    ovRows.append(tr);
  };
  for (const o of rule.overrides.filter((o) => !o.device)) addOverride(o);

  const note = h('input', { id: 'rule-note', maxlength: 500, size: 40, placeholder: t('rules.note') });
  const save = async () => {
    const params = {};
    if (provinceWide) for (const i of root.querySelectorAll('input[data-param]:not(.ov-param)')) params[i.dataset.param] = Number(i.value);
    const overrides = [...ovRows.querySelectorAll('tr')].map((tr) => {
      const p = {};
      for (const i of tr.querySelectorAll('.ov-param')) if (i.value !== '') p[i.dataset.param] = Number(i.value);
      return { scope: tr.querySelector('.ov-scope').value.trim(), params: p };
    }).filter((o) => o.scope && Object.keys(o.params).length);
    try {
      const r = await api('POST', `/api/rules/${encodeURIComponent(rule.id)}`, { params: provinceWide ? params : undefined, overrides, note: note.value });
      notice = { bad: false, text: `${t('rules.saved')} · v${r.version}` };
      await load();
    } catch (e) {
      notice = { bad: true, text: errText(e) };
      render();
    }
  };

  const firstParam = Object.keys(rule.params)[0];
  const cur = firstParam ? rule.params[firstParam] : 0;
  const btParam = h('select', { id: 'bt-param' }, Object.keys(rule.params).map((k) => h('option', { value: k }, k)));
  const btFrom = h('input', { id: 'bt-from', type: 'number', step: 'any', value: lastBacktest?.req.from ?? +(cur * 0.5).toFixed(4), size: 6 });
  const btTo = h('input', { id: 'bt-to', type: 'number', step: 'any', value: lastBacktest?.req.to ?? +(cur * 1.5).toFixed(4), size: 6 });
  const btStep = h('input', { id: 'bt-step', type: 'number', step: 'any', value: lastBacktest?.req.step ?? +(cur * 0.1).toFixed(4), size: 6 });
  const btDays = h('input', { id: 'bt-days', type: 'number', min: 1, max: 31, value: lastBacktest?.req.days ?? 7, size: 4 });
  const btErr = h('p', { class: 'error', role: 'alert' });
  const run = async () => {
    const req = { param: btParam.value, from: Number(btFrom.value), to: Number(btTo.value), step: Number(btStep.value), days: Number(btDays.value) };
    const until = Date.now();
    try {
      btErr.textContent = '…';
      const r = await api('POST', `/api/rules/${encodeURIComponent(rule.id)}/backtest`, { param: req.param, from: req.from, to: req.to, step: req.step, since: until - req.days * 86400000, until });
      lastBacktest = { req, result: r };
      render();
    } catch (e) {
      btErr.textContent = errText(e);
    }
  };

  return h('div', {},
    h('div', { class: 'panel' },
      h('h2', {}, loc(rule.name), ' ', h('span', { class: `badge ${rule.category}` }, t('category.' + rule.category))),
      rule.description ? h('p', { class: 'muted' }, loc(rule.description)) : null,
      h('h3', {}, t('rules.params')),
      h('div', { class: 'form-row' }, paramInputs),
      h('h3', {}, t('rules.overrides')),
      h('table', { class: 'grid' }, h('thead', {}, h('tr', {}, h('th', {}, t('rules.scope')), Object.keys(rule.params).map((k) => h('th', {}, k)), h('th', {}, ''))), ovRows),
      writable ? h('button', { type: 'button', id: 'add-override', onclick: () => addOverride(null) }, '+ ' + t('rules.overrides')) : null,
      writable ? h('div', { class: 'form-row spaced' }, h('label', {}, h('span', {}, t('rules.note')), note), h('button', { class: 'primary', id: 'rule-save', type: 'button', onclick: save }, t('rules.save'))) : null,
    ),
    writable ? h('div', { class: 'panel' },
      h('h2', {}, t('rules.backtest')),
      h('div', { class: 'form-row' },
        h('label', {}, h('span', {}, t('rules.param')), btParam),
        h('label', {}, h('span', {}, t('rules.from')), btFrom),
        h('label', {}, h('span', {}, t('rules.to')), btTo),
        h('label', {}, h('span', {}, t('rules.steps')), btStep),
        h('label', {}, h('span', {}, t('rules.period')), btDays),
        h('button', { class: 'primary', id: 'bt-run', type: 'button', onclick: run }, t('rules.run'))),
      btErr,
      lastBacktest ? [
        h('p', { class: 'muted', id: 'bt-summary' }, `${lastBacktest.result.records} records · ${lastBacktest.result.devices} devices · ${fmtTime(lastBacktest.result.since)} – ${fmtTime(lastBacktest.result.until)}${lastBacktest.result.truncated ? ' · (truncated)' : ''}`),
        chart(lastBacktest.result),
      ] : null,
    ) : null,
    h('div', { class: 'panel' }, h('h2', {}, t('rules.history')),
      versions.length ? h('ol', { class: 'history', id: 'rule-versions' }, versions.map((v) => h('li', {}, h('time', {}, fmtTime(v.createdAt)), ` v${v.version} · ${v.author} — ${v.comment}`, h('pre', { class: 'muted' }, v.diff)))) : h('p', { class: 'muted' }, '—')),
  );
}

export async function mount(el) {
  root = el;
  notice = null;
  await load();
}
export function rerender() {
  render();
}
export function unmount() {
  root = null;
}

// Shared helpers of the web app: the API client (cookie + CSRF header) and a tiny element builder.
import { loc, getLang } from './i18n.js';

export const session = { user: null, csrfToken: null, permissions: [], features: {} };

export function setSession(me) {
  session.user = me?.user ?? null;
  session.csrfToken = me?.csrfToken ?? null;
  session.permissions = me?.permissions ?? [];
  session.features = me?.features ?? {};
}

export function can(permission) {
  return session.permissions.includes(permission);
}

export class ApiFailure extends Error {
  constructor(status, error) {
    super(error?.message?.en ?? `HTTP ${status}`);
    this.status = status;
    this.error = error;
  }
  text() {
    return loc(this.error?.message) || `HTTP ${this.status}`;
  }
}

export async function api(method, path, body) {
  const headers = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (method !== 'GET' && session.csrfToken) headers['x-xiaoan-csrf'] = session.csrfToken;
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: 'same-origin' });
  const type = r.headers.get('content-type') ?? '';
  const data = type.includes('json') ? await r.json() : await r.text();
  if (!r.ok) {
    if (r.status === 401 && path !== '/api/login' && path !== '/api/me') window.dispatchEvent(new Event('xiaoan:unauthenticated'));
    throw new ApiFailure(r.status, data?.error);
  }
  return data;
}

/** Replace an element's children; null/false are skipped and arrays flattened (unlike replaceChildren). */
export function fill(el, ...children) {
  el.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false).map((c) => (c instanceof Node ? c : document.createTextNode(String(c)))));
}

/** h('div', {class: 'x', onclick: fn}, child, 'text', ...) */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function langIsZh() {
  return getLang() === 'zh';
}

/** Org path → readable name, from the names the server sent (falls back to the code). */
export const orgNames = new Map();
export function orgName(path) {
  if (!path) return '';
  const n = orgNames.get(path);
  return n ? loc(n) : path;
}
export async function loadOrgNames() {
  try {
    const r = await api('GET', '/api/org');
    for (const n of r.nodes) orgNames.set(n.path, { zh: n.nameZh, en: n.nameEn || n.nameZh });
    return r.nodes;
  } catch {
    return [];
  }
}

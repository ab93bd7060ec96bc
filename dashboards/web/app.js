// The web app shell: login, language, navigation between pages. Vanilla JS modules, no build.
import { t, setLang, getLang, applyStatic } from './i18n.js';
import { api, session, setSession, ApiFailure, h, loadOrgNames, orgName } from './lib.js';

const pages = {
  alarms: () => import('./alarms.js'),
  devices: () => import('./devices.js'),
  rules: () => import('./rules.js'),
  overview: () => import('./overview.js'),
};
const PATHS = { '/': 'alarms', '/devices': 'devices', '/rules': 'rules', '/overview': 'overview' };

let current = null; // { name, mod }

function pageFor(pathname) {
  return PATHS[pathname] ?? 'alarms';
}

function allowedPages() {
  const p = session.permissions ?? [];
  return {
    alarms: p.includes('alerts.read'),
    devices: p.includes('devices.read'),
    rules: p.includes('rules.read'),
    overview: p.includes('overview.read'),
  };
}

async function show(name) {
  const allowed = allowedPages();
  if (!allowed[name]) name = Object.keys(allowed).find((k) => allowed[k]) ?? 'alarms';
  if (current?.mod?.unmount) current.mod.unmount();
  const root = document.getElementById('page');
  root.replaceChildren();
  for (const a of document.querySelectorAll('#nav a')) {
    a.classList.toggle('active', a.dataset.page === name);
    a.hidden = !allowed[a.dataset.page];
  }
  const mod = await pages[name]();
  current = { name, mod };
  await mod.mount(root);
}

function showLogin(message) {
  document.getElementById('login').hidden = false;
  document.getElementById('page').hidden = true;
  document.getElementById('nav').hidden = true;
  document.getElementById('who').hidden = true;
  document.getElementById('logout').hidden = true;
  document.getElementById('live').hidden = true;
  document.getElementById('login-error').textContent = message ?? '';
  document.getElementById('username').focus();
}

async function enter() {
  document.getElementById('login').hidden = true;
  document.getElementById('page').hidden = false;
  document.getElementById('nav').hidden = false;
  const who = document.getElementById('who');
  who.hidden = false;
  await loadOrgNames();
  who.textContent = `${session.user.displayName || session.user.username} · ${orgName(session.user.orgPath)}`;
  document.getElementById('logout').hidden = false;
  await show(pageFor(location.pathname));
}

async function start() {
  setLang(getLang());
  const langSel = document.getElementById('lang');
  langSel.value = getLang();
  applyStatic();
  langSel.addEventListener('change', async () => {
    setLang(langSel.value);
    applyStatic();
    if (session.user) document.getElementById('who').textContent = `${session.user.displayName || session.user.username} · ${orgName(session.user.orgPath)}`;
    if (current?.mod?.rerender) current.mod.rerender();
  });

  document.getElementById('login-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const username = document.getElementById('username').value.trim();
    const password = document.getElementById('password').value;
    // A click is a user gesture: the alarm sound may play from now on.
    const { unlockSound } = await import('./sound.js');
    unlockSound();
    try {
      await api('POST', '/api/login', { username, password });
      document.getElementById('password').value = '';
      setSession(await api('GET', '/api/me'));
      await enter();
    } catch (e) {
      document.getElementById('login-error').textContent = e instanceof ApiFailure ? e.text() : t('error.network');
    }
  });

  document.getElementById('logout').addEventListener('click', async () => {
    try {
      await api('POST', '/api/logout', {});
    } catch {
      /* the session may be gone already */
    }
    if (current?.mod?.unmount) current.mod.unmount();
    current = null;
    setSession(null);
    showLogin();
  });

  for (const a of document.querySelectorAll('#nav a')) {
    a.addEventListener('click', (ev) => {
      ev.preventDefault();
      history.pushState(null, '', a.getAttribute('href'));
      show(a.dataset.page);
    });
  }
  window.addEventListener('popstate', () => session.user && show(pageFor(location.pathname)));
  window.addEventListener('xiaoan:unauthenticated', () => {
    if (current?.mod?.unmount) current.mod.unmount();
    current = null;
    setSession(null);
    showLogin();
  });

  try {
    setSession(await api('GET', '/api/me'));
    await enter();
  } catch {
    showLogin();
  }
}

start();
export { h };

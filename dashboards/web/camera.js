// Camera view for an alarm: the snapshot taken when it was raised and the live picture of the
// nearest camera (JSMpeg over a WebSocket on this server, behind the same login).
import { t, loc, fmtTime } from './i18n.js';
import { api, h, ApiFailure } from './lib.js';

let player = null;
let jsmpegLoading = null;

function loadJsmpeg() {
  if (window.JSMpeg) return Promise.resolve();
  jsmpegLoading ??= new Promise((resolve, reject) => {
    const s = document.createElement('script');
    s.src = '/api/vendor/jsmpeg.js';
    s.onload = resolve;
    s.onerror = () => reject(new Error('JSMpeg did not load'));
    document.head.append(s);
  });
  return jsmpegLoading;
}

function close(modal) {
  try {
    player?.destroy();
  } catch {
    /* already gone */
  }
  player = null;
  modal.remove();
}

export async function showCamera(alert) {
  const body = h('div', { class: 'views' }, h('p', { class: 'muted' }, '…'));
  const title = h('h2', {}, t('alarm.camera'), ' · ', loc(alert.title));
  const modal = h('div', { class: 'modal', id: 'camera-modal', role: 'dialog', 'aria-modal': 'true' },
    h('div', { class: 'box' }, title, body, h('div', { class: 'actions spaced' }, h('button', { id: 'camera-close', onclick: () => close(modal) }, t('camera.close')))));
  modal.addEventListener('click', (e) => { if (e.target === modal) close(modal); });
  document.addEventListener('keydown', function esc(e) { if (e.key === 'Escape') { close(modal); document.removeEventListener('keydown', esc); } });
  document.body.append(modal);
  let info;
  try {
    info = await api('GET', `/api/alerts/${encodeURIComponent(alert.id)}/camera`);
  } catch (e) {
    body.replaceChildren(h('p', { class: 'notice bad' }, e instanceof ApiFailure ? e.text() : t('error.network')));
    return;
  }
  if (!info.camera) {
    body.replaceChildren(h('p', { class: 'empty' }, t('camera.none')));
    return;
  }
  title.append(` · ${info.camera.name}`);
  const snap = h('figure', {}, h('figcaption', {}, t('camera.snapshot')),
    info.snapshots.length ? h('img', { src: info.snapshots[0].url, alt: t('camera.snapshot'), id: 'camera-snapshot' }) : h('p', { class: 'muted' }, t('camera.noSnapshot')),
    info.snapshots.length ? h('small', { class: 'muted' }, fmtTime(info.snapshots[0].createdAt)) : null);
  const canvas = h('canvas', { id: 'camera-live', width: 640, height: 360 });
  const live = h('figure', {}, h('figcaption', {}, t('camera.live')), info.liveUrl ? canvas : h('p', { class: 'muted' }, '—'));
  body.replaceChildren(snap, live);
  if (info.liveUrl) {
    try {
      await loadJsmpeg();
      const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}${info.liveUrl}`;
      player = new window.JSMpeg.Player(url, { canvas, audio: false, disableWebAssembly: true, videoBufferSize: 1024 * 1024 });
      window.__xiaoanPlayer = player;
    } catch (e) {
      live.append(h('p', { class: 'notice bad' }, String(e.message ?? e)));
    }
  }
}

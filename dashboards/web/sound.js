// Alarm sounds made with Web Audio (no files): an emergency is a fast two-tone siren repeated,
// a hazard one soft double beep. Browsers allow sound only after a user gesture: the login click.
let ctx = null;

export function unlockSound() {
  try {
    ctx ??= new (window.AudioContext || window.webkitAudioContext)();
    if (ctx.state === 'suspended') ctx.resume();
  } catch {
    ctx = null;
  }
}

function tone(freq, start, dur, gain = 0.2) {
  const o = ctx.createOscillator();
  const g = ctx.createGain();
  o.type = 'square';
  o.frequency.value = freq;
  g.gain.setValueAtTime(gain, ctx.currentTime + start);
  g.gain.exponentialRampToValueAtTime(0.0001, ctx.currentTime + start + dur);
  o.connect(g).connect(ctx.destination);
  o.start(ctx.currentTime + start);
  o.stop(ctx.currentTime + start + dur + 0.02);
}

/** Play the cue for an alert's category; returns what was played (for tests and the banner). */
export function playAlarm(category) {
  window.__xiaoanSounds = (window.__xiaoanSounds ?? 0) + 1;
  if (!ctx) unlockSound();
  if (!ctx) return 'silent';
  if (category === 'emergency') {
    for (let i = 0; i < 3; i++) {
      tone(960, i * 0.5, 0.22);
      tone(640, i * 0.5 + 0.25, 0.22);
    }
    return 'siren';
  }
  tone(700, 0, 0.15, 0.12);
  tone(700, 0.25, 0.15, 0.12);
  return 'beep';
}

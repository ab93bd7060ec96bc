// Injected runtime services: a clock (so polling, backoff and rule windows run on fake time in
// tests) and a logger (JSON lines, with secrets and ID numbers redacted before they are written).

export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
  setInterval(fn: () => void, ms: number): unknown;
  clearInterval(handle: unknown): void;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
  setInterval: (fn, ms) => setInterval(fn, ms),
  clearInterval: (h) => clearInterval(h as NodeJS.Timeout),
};

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
const LEVELS: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  /** a logger whose lines carry `unit` (the fault unit: a driver, a sink, a rule) */
  child(unit: string): Logger;
}

const SECRET_KEYS = /pass(word)?|secret|token|authorization|cookie|api[-_]?key|private[-_]?key|id_?number|idcard|resident_?id/i;
// 18-character resident ID numbers (GB 11643) anywhere in a string
const RESIDENT_ID = /\b(\d{6})\d{8}(\d{3}[\dXx])\b/g;
const URL_PASSWORD = /(\/\/[^:/@\s]+):[^@\s]*@/g;

/** Remove secrets and ID numbers from anything about to be logged. */
export function redact(value: unknown, depth = 0): unknown {
  if (typeof value === 'string') return value.replace(URL_PASSWORD, '$1:***@').replace(RESIDENT_ID, '$1********$2');
  if (depth > 6 || value === null || typeof value !== 'object') return value;
  if (value instanceof Error) return { name: value.name, message: redact(value.message, depth + 1) };
  if (Array.isArray(value)) return value.map((v) => redact(v, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[k] = SECRET_KEYS.test(k) ? '***' : redact(v, depth + 1);
  return out;
}

export function createLogger(
  opts: { level?: LogLevel; unit?: string; write?: (line: string) => void } = {},
): Logger {
  const min = LEVELS[opts.level ?? ((process.env.XIAOAN_LOG_LEVEL as LogLevel) || 'info')] ?? LEVELS.info;
  const write = opts.write ?? ((line: string) => process.stderr.write(line + '\n'));
  const make = (unit: string | undefined): Logger => {
    const emit = (level: LogLevel, msg: string, fields?: Record<string, unknown>) => {
      if (LEVELS[level] < min) return;
      const rec = { t: new Date().toISOString(), level, ...(unit ? { unit } : {}), msg: redact(msg), ...(fields ? (redact(fields) as object) : {}) };
      write(JSON.stringify(rec));
    };
    return {
      debug: (m, f) => emit('debug', m, f),
      info: (m, f) => emit('info', m, f),
      warn: (m, f) => emit('warn', m, f),
      error: (m, f) => emit('error', m, f),
      child: (u) => make(unit ? `${unit}/${u}` : u),
    };
  };
  return make(opts.unit);
}

/** A logger that drops everything (tests that assert on behaviour, not on logs). */
export const silentLogger: Logger = createLogger({ write: () => {} });

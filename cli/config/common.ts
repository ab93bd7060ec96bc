// Building blocks shared by the tiers' configuration schemas. Every setting carries a
// description (shown by `xiaoan config env` and in docs/configuration.md).
import { z } from 'zod';
import { ID_PATTERN, OrgCodeError, parseOrgPath, parseRegionCode } from '../../contract/index.ts';

export const port = (dflt: number, what: string) =>
  z.number().int().min(0).max(65535).default(dflt).describe(what);

export const host = (dflt: string, what: string) => z.string().min(1).default(dflt).describe(what);

/** An HTTP listener: health (`/healthz`), metrics and, for `serve`, the API. */
export const httpSchema = (dfltPort: number, what: string) =>
  z
    .strictObject({
      port: port(dfltPort, `${what} port; 0 picks a free one`),
      host: host('0.0.0.0', `${what} bind address`),
    })
    .default({ port: dfltPort, host: '0.0.0.0' });

/** What a URL setting was given, without its password, for an error message. */
function shownUrl(v: string): string {
  return JSON.stringify(v.replace(/\/\/([^:/@\s]+):[^@\s]*@/, '//$1:***@').slice(0, 120));
}

/**
 * A URL setting: the message names what was given and every accepted scheme (the path in front of
 * it names the setting, so the message does not name it again).
 */
export function urlSetting(schemes: readonly string[], pattern: RegExp, example: string) {
  return z.string().superRefine((v, ctx) => {
    if (pattern.test(v)) return;
    const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):/.exec(v)?.[1];
    const what = scheme && !schemes.includes(scheme.toLowerCase()) ? `has scheme "${scheme}:", which is not accepted` : 'is not a usable URL';
    ctx.addIssue({ code: 'custom', message: `${shownUrl(v)} ${what}; accepted schemes: ${schemes.map((s) => s + ':').join(', ')} (e.g. ${example})` });
  });
}

export const mqttUrl = urlSetting(['mqtt', 'mqtts', 'ws', 'wss', 'tcp', 'ssl'], /^(mqtts?|wss?|tcp|ssl):\/\/[^\s]+$/, 'mqtt://broker:1883, mqtts://broker:8883');

export const databaseUrl = urlSetting(
  ['postgres', 'postgresql', 'pglite'],
  /^(postgres(ql)?:\/\/[^\s]+|pglite:.*)$/,
  'postgres://USER@HOST:5432/DB, pglite:DIR, pglite:memory',
);

/** PostgreSQL / TimescaleDB or PGlite, with the password apart from the URL so it can come from a secret file. */
export const databaseSchema = z.strictObject({
  url: databaseUrl.describe('PostgreSQL/TimescaleDB URL (postgres://USER@HOST:5432/DB) or pglite:DIR for the embedded database'),
  password: z
    .string()
    .optional()
    .meta({ description: 'database password; replaces any password in the URL (use XIAOAN_DATABASE__PASSWORD_FILE)', secret: true }),
});

export const tlsSchema = z
  .strictObject({
    ca: z.string().optional().describe('CA certificate file (PEM) to trust for the broker'),
    cert: z.string().optional().describe('client certificate file (PEM)'),
    key: z.string().optional().describe('client private key file (PEM; keep it readable by the service only)'),
    rejectUnauthorized: z.boolean().default(true).describe('refuse brokers whose certificate does not verify'),
  })
  .optional();

export const idString = (what: string) =>
  z.string().regex(ID_PATTERN, `${what} must be 1–64 letters, digits, '.', '_' or '-' (no '/', '+', '#')`);

export const regionCode = z.string().superRefine((v, ctx) => {
  try {
    parseRegionCode(v);
  } catch (e) {
    ctx.addIssue({ code: 'custom', message: (e as OrgCodeError).message });
  }
});

export const countyCode = z.string().superRefine((v, ctx) => {
  try {
    const r = parseRegionCode(v);
    if (!r.county) ctx.addIssue({ code: 'custom', message: `"${v}" must be a 6-digit county (district) code such as 370102` });
  } catch (e) {
    ctx.addIssue({ code: 'custom', message: (e as OrgCodeError).message });
  }
});

export const orgPath = z.string().superRefine((v, ctx) => {
  try {
    parseOrgPath(v);
  } catch (e) {
    ctx.addIssue({ code: 'custom', message: (e as OrgCodeError).message });
  }
});

export const logLevel = z.enum(['debug', 'info', 'warn', 'error']).default('info').describe('log level (JSON lines on stderr)');

/** Replace the password in a postgres URL with `database.password` when given. */
export function databaseConnectionUrl(db: { url: string; password?: string }): string {
  if (!db.password || !/^postgres(ql)?:\/\//.test(db.url)) return db.url;
  const u = new URL(db.url);
  u.password = db.password;
  return u.toString();
}

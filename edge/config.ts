// Gateway configuration: one zod schema; a file is checked as a whole and every problem is
// reported at once (`path: message`), so a technician fixes the file in one pass.
import { readFileSync } from 'node:fs';
import { resolve, dirname } from 'node:path';
import { z } from 'zod';
import { parse as parseYaml } from 'yaml';
import { ID_PATTERN, parseOrgPath, parseRegionCode } from '../contract/index.ts';

/** A device as enrolled: the driver's DeviceSpec plus, for MQTT devices, the password it logs in with. */
export const deviceSpecSchema = z.strictObject({
  id: z.string().regex(ID_PATTERN, 'device id: 1–64 letters, digits, . _ - (no / + #), starting with a letter or digit'),
  profile: z.string().min(1, 'required: a profile id').max(128),
  url: z.string().min(1, 'required: where the device is').max(512),
  name: z.string().max(200).optional(),
  building: z.string().max(100).optional(),
  room: z.string().max(100).optional(),
  intervalMs: z.number().int().min(100, 'at least 100 ms').max(86_400_000).optional(),
  /** MQTT devices only: the password the device uses on the gateway's device broker (stored hashed) */
  password: z.string().min(8, 'at least 8 characters').max(256).optional(),
});
export type DeviceEnrolment = z.infer<typeof deviceSpecSchema>;

/** Downlink command kinds a gateway can handle (all accepted by default; narrow with commands.allow). */
export const COMMAND_KINDS = ['device.write', 'device.upsert', 'rebirth', 'device.remove', 'device.test', 'device.discover'] as const;

const countySchema = z.string().superRefine((v, ctx) => {
  try {
    const r = parseRegionCode(v);
    if (!r.county) ctx.addIssue({ code: 'custom', message: `"${v}" must be a 6-digit county code (GB/T 2260), e.g. 370102` });
  } catch (e) {
    ctx.addIssue({ code: 'custom', message: (e as Error).message });
  }
});

const orgPathSchema = z.string().superRefine((v, ctx) => {
  try {
    const n = parseOrgPath(v);
    if (n.level !== 'school' && n.level !== 'college' && n.level !== 'university') {
      ctx.addIssue({ code: 'custom', message: `site "${v}" is a ${n.level}; a gateway serves a school or a college` });
    }
  } catch (e) {
    ctx.addIssue({ code: 'custom', message: (e as Error).message });
  }
});

const hostPort = (defPort: number) =>
  z.strictObject({
    port: z.number().int().min(0).max(65535).default(defPort),
    host: z.string().default('127.0.0.1'),
  });

export const edgeConfigSchema = z
  .strictObject({
    gatewayId: z.string().regex(ID_PATTERN, 'gateway id: 1–64 letters, digits, . _ - (no / + #)'),
    county: countySchema,
    /** org path of the school (or college) this gateway serves */
    site: orgPathSchema,
    name: z.string().max(200).optional(),
    uplink: z.strictObject({
      /** mqtt://, mqtts://, ws://, wss:// */
      url: z.string().regex(/^(mqtts?|wss?|tcp|tls):\/\/[^\s]+$/, 'uplink.url: mqtt://HOST:PORT or mqtts://HOST:PORT'),
      /** defaults to gatewayId */
      username: z.string().max(128).optional(),
      password: z.string().max(512).optional(),
      tls: z
        .strictObject({
          /** PEM file paths (relative to the config file) */
          ca: z.string().optional(),
          cert: z.string().optional(),
          key: z.string().optional(),
          rejectUnauthorized: z.boolean().default(true),
        })
        .optional(),
      keepaliveSeconds: z.number().int().min(5).max(3600).default(30),
      reconnectMs: z.number().int().min(100).max(600_000).default(2000),
      /** records per uplink batch (≤ MAX_BATCH of the contract) */
      batchSize: z.number().int().min(1).max(5000).default(1000),
      /** batches awaiting the centre's receipt at once, per lane group (alarms have their own window) */
      inflight: z.number().int().min(1).max(64).default(8)
        .describe("batches awaiting the centre's receipt at once, per lane group (alarms have a window of their own)"),
      /** a batch without a receipt this long after it was sent is sent again (docs/delivery.md) */
      receiptTimeoutMs: z.number().int().min(1000).max(3_600_000).default(30_000)
        .describe('a batch with no receipt this long after it was sent is sent again, whatever the broker said (docs/delivery.md)'),
    }),
    dataDir: z.string().min(1),
    deviceBroker: hostPort(1884).default({ port: 1884, host: '127.0.0.1' }),
    http: hostPort(8081)
      .extend({
        /** when set, the REST API wants `Authorization: Bearer TOKEN` (metrics and healthz stay open) */
        token: z.string().min(16).optional(),
      })
      .default({ port: 8081, host: '127.0.0.1' }),
    devices: z.array(deviceSpecSchema).default([]),
    buffer: z
      .strictObject({
        maxRecords: z.number().int().min(100).default(5_000_000)
          .describe('buffer cap in records; past it the oldest routine readings are dropped, never alarms or events'),
        maxBytes: z.number().int().min(100_000).optional()
          .describe('buffer cap in bytes (converted at ~' + String(100) + ' bytes a record); the smaller cap applies'),
        replayPerSecond: z.number().int().min(1).default(5000)
          .describe('backlog replay rate (records/s) after an outage; new alarms go first and are never held back'),
        synchronous: z.enum(['full', 'normal']).default('normal')
          .describe('SQLite synchronous level of the buffer: normal (fsync at checkpoints; seq reservations always fsynced) or full (fsync every write)'),
      })
      .default({ maxRecords: 5_000_000, replayPerSecond: 5000, synchronous: 'normal' }),
    /** key of the keyed hash of visitor ID numbers (kiosks); the same key as the centre's watch-list */
    idHashKey: z.string().min(16, 'at least 16 characters').optional().meta({ description: 'key for hashing visitor ID numbers at the kiosk driver (use XIAOAN_ID_HASH_KEY_FILE)', secret: true }),
    edgeSecretKey: z.string().optional().meta({
      description: "AES-256-GCM key sealing device URL credentials in the registry: 32 bytes as 64 hex digits or base64 (use XIAOAN_EDGE_SECRET_KEY_FILE); default: generated into {dataDir}/secret.key (0600) on first start",
      secret: true,
    }),
    logLevel: z.enum(['debug', 'info', 'warn', 'error']).default('info').describe('log level (JSON lines on stderr)'),
    scheduler: z
      .strictObject({
        /** ± fraction of the interval each poll is moved by, so 500 devices do not poll in lockstep */
        jitter: z.number().min(0).max(0.5).default(0.1),
        /** after this many failed polls in a row a device is offline (1 failure = degraded) */
        offlineAfterFailures: z.number().int().min(1).default(3),
      })
      .default({ jitter: 0.1, offlineAfterFailures: 3 }),
    commands: z
      .strictObject({
        /** command kinds this gateway accepts from the centre */
        allow: z.array(z.enum(COMMAND_KINDS)).default([...COMMAND_KINDS]),
        /** commands older than this (issuedAt) are refused as stale */
        maxAgeMs: z.number().int().min(1000).default(300_000),
      })
      .default({ allow: [...COMMAND_KINDS], maxAgeMs: 300_000 }),
  })
  .superRefine((c, ctx) => {
    if (!c.site.startsWith(c.county.slice(0, 2)) || (c.site.split('/').length === 4 && c.site.split('/')[2] !== c.county)) {
      ctx.addIssue({ code: 'custom', path: ['site'], message: `site "${c.site}" does not lie in county ${c.county}` });
    }
    const seen = new Map<string, number>();
    c.devices.forEach((d, i) => {
      if (seen.has(d.id)) ctx.addIssue({ code: 'custom', path: ['devices', i, 'id'], message: `device id "${d.id}" repeats devices[${seen.get(d.id)}]` });
      else seen.set(d.id, i);
    });
  });

export type EdgeConfig = z.infer<typeof edgeConfigSchema>;
export type EdgeConfigInput = z.input<typeof edgeConfigSchema>;

export class ConfigError extends Error {
  constructor(readonly problems: string[], where: string) {
    super(`配置无效 invalid gateway configuration in ${where}:\n  ${problems.join('\n  ')}`);
    this.name = 'ConfigError';
  }
}

/** Every schema problem as `path: message`, all of them. */
export function configProblems(err: z.ZodError): string[] {
  return err.issues.map((i) => `${i.path.length ? i.path.map((p, k) => (typeof p === 'number' ? `[${p}]` : (k ? '.' : '') + String(p))).join('') : '(root)'}: ${i.message}`);
}

export function parseEdgeConfig(input: unknown, where = 'config'): EdgeConfig {
  const r = edgeConfigSchema.safeParse(input);
  if (!r.success) throw new ConfigError(configProblems(r.error), where);
  return r.data;
}

/**
 * Reads a YAML or JSON config file (`tier: edge` allowed); relative dataDir and TLS paths are
 * resolved against the file's folder.
 */
export function loadEdgeConfigFile(file: string): EdgeConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError([`cannot read the file: ${(e as Error).message}`], file);
  }
  let doc: unknown;
  try {
    doc = parseYaml(text, { maxAliasCount: 50 });
  } catch (e) {
    throw new ConfigError([`not YAML or JSON: ${(e as Error).message.split('\n')[0]}`], file);
  }
  if (!doc || typeof doc !== 'object' || Array.isArray(doc)) throw new ConfigError(['the file must be a mapping of settings (key: value)'], file);
  const { tier, ...body } = doc as Record<string, unknown>;
  if (tier !== undefined && tier !== 'edge') throw new ConfigError([`tier: this file configures "${String(tier)}"; \`xiaoan edge\` needs tier: edge`], file);
  return resolvePaths(parseEdgeConfig(body, file), file);
}

/** Relative dataDir and TLS file paths are taken from the config file's folder. */
export function resolvePaths(cfg: EdgeConfig, file: string): EdgeConfig {
  const base = dirname(resolve(file));
  cfg.dataDir = resolve(base, cfg.dataDir);
  if (cfg.uplink.tls) {
    for (const k of ['ca', 'cert', 'key'] as const) if (cfg.uplink.tls[k]) cfg.uplink.tls[k] = resolve(base, cfg.uplink.tls[k]!);
  }
  return cfg;
}

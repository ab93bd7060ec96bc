// The ingest tier's configuration (`tier: ingest`): one worker process consuming one region's
// topics through an MQTT 5 shared subscription into PostgreSQL / TimescaleDB (and optionally
// InfluxDB). Run more processes with the same config to scale out; the broker splits the region.
// The ingest command (`xiaoan ingest --config FILE`) should take its config from
// `loadConfig(file, { tier: 'ingest' })` in cli/config/index.ts.
import { z } from 'zod';
import { databaseSchema, httpSchema, idString, logLevel, mqttUrl, regionCode, tlsSchema, urlSetting } from './common.ts';

export const ingestSchema = z.strictObject({
  region: regionCode
    .default('37')
    .describe('topic subtree this worker serves: 37 (province), 3701 (a city) or 370102 (a county)'),
  replica: idString('replica')
    .default('main')
    .describe("this worker's name among the workers of its region; MQTT client ids are xiaoan-ingest-{region}-{replica}-{events|readings|control}, stable across restarts so the broker keeps its session (1 h). Each worker of a region needs its own; a second worker under a taken name is refused"),
  shareGroup: idString('shareGroup')
    .default('xiaoan-ingest')
    .describe('MQTT 5 shared-subscription group ($share/GROUP/…); workers in one group split the traffic'),
  database: databaseSchema,
  broker: z.strictObject({
    url: mqttUrl.describe('central broker, e.g. mqtt://emqx1.xiaoan.local:1883'),
    username: z.string().min(1).default('svc-ingest').describe('service account of the ingest workers'),
    password: z.string().optional().meta({ description: 'service account password (use XIAOAN_BROKER__PASSWORD_FILE)', secret: true }),
    clientId: idString('broker.clientId').optional().describe('MQTT client id prefix replacing xiaoan-ingest-{region}-{replica} (the lane name is appended); must be unique per worker'),
    tls: tlsSchema,
  }),
  http: httpSchema(8082, 'worker /healthz and /metrics'),
  influx: z
    .strictObject({
      url: urlSetting(['http', 'https'], /^https?:\/\/[^\s]+$/, 'http://influxdb:8086/xiaoan').describe('optional second sink, InfluxDB 1.x, e.g. http://influxdb:8086/xiaoan'),
      username: z.string().optional(),
      password: z.string().optional().meta({ description: 'InfluxDB password (use XIAOAN_INFLUX__PASSWORD_FILE)', secret: true }),
      bufferMax: z.number().int().positive().default(100_000).describe('points held for InfluxDB while it is slow or down; past it the oldest are dropped and counted'),
    })
    .optional(),
  rules: z
    .strictObject({
      dirs: z.array(z.string()).default(['rules/library']).describe('folders of rule YAML files (JSON list in the environment)'),
    })
    .default({ dirs: ['rules/library'] }),
  delivery: z
    .strictObject({
      hazardUrl: urlSetting(['http', 'https'], /^https?:\/\/[^\s]+$/, 'https://hazard.example.gov.cn/api/alerts').optional().describe('provincial hazard (隐患排查) module endpoint'),
      emergencyUrl: urlSetting(['http', 'https'], /^https?:\/\/[^\s]+$/, 'https://emergency.example.gov.cn/api/alerts').optional().describe('provincial emergency (应急处置) module endpoint'),
      secret: z.string().optional().meta({ description: 'HMAC key signing alert deliveries (use XIAOAN_DELIVERY__SECRET_FILE)', secret: true }),
    })
    .optional(),
  logLevel,
});

export type IngestFileConfig = z.infer<typeof ingestSchema>;

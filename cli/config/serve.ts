// The dashboards tier's configuration (`tier: serve`): the HTTP API, live push and web app.
// The serve command (`xiaoan serve --config FILE`) should take its config from
// `loadConfig(file, { tier: 'serve' })` in cli/config/index.ts.
import { z } from 'zod';
import { databaseSchema, httpSchema, logLevel, mqttUrl, tlsSchema } from './common.ts';

export const serveSchema = z.strictObject({
  database: databaseSchema,
  http: httpSchema(8080, 'dashboard server (API, alarm console, /healthz)'),
  publicUrl: z.string().url().optional().describe('external URL behind the reverse proxy, for links and secure cookies'),
  broker: z
    .strictObject({
      url: mqttUrl.describe('central broker, for downlink commands (release a gate)'),
      username: z.string().min(1).default('svc-serve').describe('service account of the dashboard server'),
      password: z.string().optional().meta({ description: 'service account password (use XIAOAN_BROKER__PASSWORD_FILE)', secret: true }),
      tls: tlsSchema,
    })
    .optional()
    .describe('omit to run without downlink commands'),
  logLevel,
});

export type ServeFileConfig = z.infer<typeof serveSchema>;

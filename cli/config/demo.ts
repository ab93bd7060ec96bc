// `tier: demo`: every tier in one process on embedded defaults (aedes, PGlite, simulated school).
import { z } from 'zod';
import { httpSchema, logLevel } from './common.ts';

export const demoSchema = z.strictObject({
  dataDir: z.string().min(1).default('./data').describe('where the demo keeps its PGlite database and gateway buffer'),
  http: httpSchema(8080, 'dashboard server'),
  logLevel,
});

export type DemoFileConfig = z.infer<typeof demoSchema>;

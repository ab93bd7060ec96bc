// The OpenAPI document of the dashboards' HTTP API, generated from the route declarations
// (`npm run openapi` writes docs/openapi/xiaoan-api.json; dashboards/openapi.test.ts fails when
// the committed file differs from the routes). docs/openapi/provincial-modules.yaml stays hand-written.

import { writeFile } from 'node:fs/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { silentLogger } from '../contract/index.ts';
import { openDb } from '../ingest/db.ts';
import { createCameraService } from './cameras.ts';
import { buildDashboardApp } from './server.ts';

export const OPENAPI_FILE = fileURLToPath(new URL('../docs/openapi/xiaoan-api.json', import.meta.url));

/** The document as the server serves it at /api/openapi.json, with every optional service wired. */
export async function openApiDocument(): Promise<Record<string, unknown>> {
  const db = await openDb('pglite:memory');
  const none = async () => [];
  const built = await buildDashboardApp({
    db,
    log: silentLogger,
    store: { queries: { listDevices: none, readings: async () => ({ points: [] }) } },
    alerting: { list: none, get: async () => null, history: async () => null, acknowledge: async () => null, resolve: async () => null },
    extras: { cameras: createCameraService({}) },
  });
  try {
    return built.app.swagger() as unknown as Record<string, unknown>;
  } finally {
    await built.close();
    await db.close();
  }
}

export const renderOpenApi = (doc: unknown) => JSON.stringify(doc, null, 2) + '\n';

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const doc = await openApiDocument();
  await writeFile(OPENAPI_FILE, renderOpenApi(doc));
  console.log(`wrote ${OPENAPI_FILE} (${Object.keys((doc.paths ?? {}) as object).length} paths)`);
}

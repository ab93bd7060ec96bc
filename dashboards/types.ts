// What the dashboards need from the other tiers: the store's scoped queries and the alerting
// module (both take a Scope first; the dashboards never build one outside their middleware).
// Structural types, so the ingest and rules modules satisfy them without importing dashboards.

import type { Clock, Command, CommandResult, Logger } from '../contract/index.ts';
import type { Db } from '../ingest/db.ts';
import type { Scope } from '../ingest/scope.ts';

export interface DashboardStore {
  db?: Db;
  queries: {
    listDevices(scope: Scope, filter?: Record<string, unknown>): Promise<unknown[]>;
    readings(scope: Scope, q: { device: string; metric: string; from: number; to: number; gatewayId?: string; resolution?: 'raw' | '1m' | '1h' | 'auto'; limit?: number }): Promise<unknown>;
    latest?(scope: Scope, ...args: unknown[]): Promise<unknown>;
    countsByRegion?(scope: Scope, ...args: unknown[]): Promise<unknown>;
    listGateways?(scope: Scope): Promise<unknown[]>;
    deadLetters?(scope: Scope, ...args: unknown[]): Promise<unknown>;
    events?(scope: Scope, q?: { device?: string; gatewayId?: string; type?: string; from?: number; to?: number; limit?: number }): Promise<unknown[]>;
  };
}

export interface DashboardAlerting {
  list(scope: Scope, filter?: Record<string, unknown>): Promise<unknown[]>;
  get(scope: Scope, id: string): Promise<unknown | null>;
  history(scope: Scope, id: string): Promise<unknown[] | null>;
  acknowledge(scope: Scope, id: string, user: string, comment?: string): Promise<unknown>;
  resolve(scope: Scope, id: string, user: string, comment?: string): Promise<unknown>;
}

export interface CommandSenderLike {
  send(gatewayId: string, command: Command, timeoutMs?: number): Promise<CommandResult>;
}

/** Optional services the pages use when the lead wires them in. */
export interface DashboardExtras {
  /** rule files and the backtest (rules engineer) */
  rules?: import('./rules-api.ts').RulesService;
  /** device models for the enrol form (from device-drivers' loadProfiles) */
  profiles?: { id: string; protocol: string; description: { zh: string; en: string }; category?: string }[];
  /** cameras: snapshot + live view */
  cameras?: import('./cameras.ts').CameraService;
}

export interface DashboardServerOptions {
  store: DashboardStore;
  alerting: DashboardAlerting;
  port?: number;
  host?: string;
  log: Logger;
  commands?: CommandSenderLike;
  /** defaults to store.db */
  db?: Db;
  clock?: Clock;
  extras?: DashboardExtras;
  /**
   * addresses of reverse proxies whose X-Forwarded-For is believed (comma-separated IPs or CIDRs),
   * so login throttling and rate limits see the browser's address, not the proxy's
   */
  trustProxy?: string;
  /** set when served over HTTPS (adds Secure to the cookie) */
  secureCookies?: boolean;
  sessionTtlMs?: number;
  heartbeatMs?: number;
  loginLimit?: import('./auth.ts').LoginLimitOptions;
  /** open live streams allowed per session and per user */
  liveLimits?: Partial<import('./routes.ts').LiveLimits>;
  webRoot?: string;
}

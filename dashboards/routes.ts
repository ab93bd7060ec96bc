// What a route declares, in one place: method and URL, the permission a caller needs, how far
// its data reaches (scope rule), the zod schemas of its params, query, body and answers, and its
// body limit. The server turns each declaration into a Fastify route; the access matrix and the
// OpenAPI document both read the declarations back from Fastify's own route table.

import type { FastifyReply, FastifyRequest } from 'fastify';
import type { IncomingMessage } from 'node:http';
import type { z } from 'zod';
import type { Clock, Logger } from '../contract/index.ts';
import type { Db } from '../ingest/db.ts';
import type { Permission, Principal } from './access.ts';
import type { LoginLimiter, SessionStore } from './auth.ts';
import type { LiveHub } from './live.ts';

/**
 * How far a route's answer reaches:
 * - `public`: nothing about any org (health, login, the player bundle);
 * - `own-session`: only the caller's own session and user;
 * - `catalogue`: the same for everyone (device models, the rule catalogue's shape);
 * - `org-subtree`: only data inside the caller's subtree, through the scoped queries of ingest/scope.ts.
 */
export type RouteScope = 'public' | 'own-session' | 'catalogue' | 'org-subtree';
export const ROUTE_SCOPES: readonly RouteScope[] = ['public', 'own-session', 'catalogue', 'org-subtree'];

export interface RouteSpec {
  /** null: no login needed (login itself, health) */
  permission: Permission | null;
  scope: RouteScope;
  summary: string;
  tags?: string[];
  params?: z.ZodType;
  query?: z.ZodType;
  body?: z.ZodType;
  /** answers by status, for the OpenAPI document */
  response?: Record<number, z.ZodType>;
  /** bytes; default 64 KiB */
  bodyLimit?: number;
  /** requests per address per window (@fastify/rate-limit) */
  rateLimit?: { max: number; windowMs: number };
}

export interface RequestContext {
  req: IncomingMessage;
  request: FastifyRequest;
  reply: FastifyReply;
  url: URL;
  remote: string;
  /** set for every route that needs a login */
  principal: Principal;
  /** the session token (to log out, to end streams with the session) */
  token: string;
  /** the parsed body (validated when the route declares a body schema); {} when none */
  body: Record<string, unknown>;
  /** a JSON answer */
  send(status: number, body: unknown, headers?: Record<string, string>): void;
}

export type ScopedHandler = (ctx: RequestContext, params: Record<string, string>) => Promise<void>;

/** A WebSocket route: `check` runs before the upgrade (its ApiError refuses it with a status). */
export interface SocketSpec<T> {
  permission: Permission;
  scope: RouteScope;
  summary: string;
  params?: z.ZodType;
  check(ctx: RequestContext, params: Record<string, string>): Promise<T>;
  open(socket: import('ws').WebSocket, ctx: RequestContext, checked: T): void;
}

export interface ApiRouter {
  route(method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, spec: RouteSpec, handler: ScopedHandler): void;
  socket<T>(url: string, spec: SocketSpec<T>): void;
  sessions: SessionStore;
  live: LiveHub;
  clock: Clock;
  log: Logger;
  db: Db;
  limiter: LoginLimiter;
  limits: LiveLimits;
  setSessionCookie(ctx: RequestContext, token: string, expiresAt: number): void;
  clearSessionCookie(ctx: RequestContext): void;
}

/** Open live streams (SSE and camera WebSocket) allowed per session and per user. */
export interface LiveLimits {
  streamsPerSession: number;
  streamsPerUser: number;
  camerasPerSession: number;
  camerasPerUser: number;
}
export const DEFAULT_LIVE_LIMITS: LiveLimits = { streamsPerSession: 4, streamsPerUser: 12, camerasPerSession: 4, camerasPerUser: 8 };

/** What the route table says about one route (config of each Fastify route). */
export interface RouteConfig {
  permission: Permission | null;
  scope: RouteScope;
}

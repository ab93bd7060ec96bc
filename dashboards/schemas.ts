// Zod schemas of the HTTP API's inputs and answers that several routes share. Wire types come
// from contract/ (alerts, ids, metrics); these add what only the HTTP surface has.

import { z } from 'zod';
import { ALERT_CATEGORIES, ALERT_STATES, alertSchema, deviceIdSchema, gatewayIdSchema, localizedSchema } from '../contract/index.ts';

/** The one error shape. */
export const errorSchema = z.looseObject({
  error: z.looseObject({ code: z.string(), message: localizedSchema }),
});

/** A query value that may be absent or empty (forms send `?state=`). */
const blank = z.literal('');
export const optionalOneOf = <T extends readonly [string, ...string[]]>(values: T) => z.union([z.enum(values), blank]).optional();
/** epoch ms or ISO 8601 (checked again by the handler, which names the parameter) */
export const timeParam = z.string().max(40).optional().describe('epoch ms or ISO 8601, e.g. 2026-09-01T08:00:00+08:00');
export const orgPathParam = z.string().max(200).optional().describe('an org path inside your own subtree, e.g. 37/3701/370102');

export const alertIdParams = z.object({ id: z.string().min(1).max(100) });
export const gatewayParams = z.object({ gatewayId: z.string().min(1).max(100) });
export const gatewayDeviceParams = z.object({ gatewayId: z.string().min(1).max(100), deviceId: deviceIdSchema });

/** An alert as the dashboards show it: the contract's alert plus the device's name and place. */
export const dashboardAlertSchema = alertSchema.partial().extend({
  deviceName: z.string().nullable().optional(),
  building: z.string().nullable().optional(),
  room: z.string().nullable().optional(),
}).loose();

export const alertsQuery = z.object({
  site: orgPathParam,
  state: optionalOneOf([...ALERT_STATES, 'open'] as [string, ...string[]]),
  category: optionalOneOf(ALERT_CATEGORIES as unknown as [string, ...string[]]),
  building: z.string().max(100).optional(),
  drill: optionalOneOf(['true', 'false']),
  limit: z.string().regex(/^\d{1,4}$/).optional().describe('1–1000'),
  from: timeParam,
  to: timeParam,
});

export const commentBody = z.object({ comment: z.string().max(1000).nullable().optional() });

export const userSchema = z.object({ username: z.string(), role: z.enum(['desk', 'tech', 'author', 'admin']), orgPath: z.string(), displayName: z.string() });

export const deviceInput = z.looseObject({
  id: deviceIdSchema,
  profile: z.string().min(1),
  url: z.string().min(1),
  name: z.string().optional(),
  building: z.string().optional(),
  room: z.string().optional(),
  intervalMs: z.number().optional(),
  password: z.string().optional(),
});

export { gatewayIdSchema, deviceIdSchema };

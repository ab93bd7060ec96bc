// Registering gateways centrally over REST (the same as `xiaoan gateway add|remove`): a gateway's
// records are stored and receipted only once it is registered (docs/delivery.md). A user registers
// and removes gateways only inside their own subtree (principal.narrow), and every change is audited.
import { randomBytes } from 'node:crypto';
import { gatewayIdSchema, parseOrgPath, parseRegionCode } from '../contract/index.ts';
import type { GatewayInfo } from '../ingest/types.ts';
import { z } from 'zod';
import type { ApiRouter, RequestContext } from './routes.ts';
import type { ApiDeps, Closer } from './api.ts';
import { audit } from './api.ts';
import { ApiError, badRequest } from './http.ts';
import { gatewayParams } from './schemas.ts';

/** What of the central store these routes need (ingest's Store has it). */
interface GatewayRegistry {
  getGateway(id: string): Promise<GatewayInfo | null>;
  registerGateway(input: { id: string; county: string; orgPath: string; name?: string; password: string }): Promise<GatewayInfo>;
  removeGateway(id: string): Promise<boolean>;
}

const FIELDS = ['id', 'county', 'orgPath', 'name', 'password', 'replace'];

/** Every problem of a registration at once, in the body's field names. */
function problemsOf(b: Record<string, unknown>): string[] {
  const problems: string[] = [];
  const unknown = Object.keys(b).filter((k) => !FIELDS.includes(k));
  if (unknown.length) problems.push(`unknown field(s) ${unknown.join(', ')}; known: ${FIELDS.join(', ')}`);
  if (typeof b.id !== 'string' || !gatewayIdSchema.safeParse(b.id).success) problems.push('id: 1–64 letters, digits, . _ - (网关编号)');
  const county = typeof b.county === 'string' ? b.county : '';
  try {
    if (!parseRegionCode(county).county) problems.push(`county: "${county}" must be a 6-digit county code such as 370102`);
  } catch (e) {
    problems.push(`county: ${(e as Error).message}`);
  }
  const orgPath = typeof b.orgPath === 'string' ? b.orgPath : '';
  try {
    parseOrgPath(orgPath);
    const region = `${county.slice(0, 2)}/${county.slice(0, 4)}/${county}`;
    if (county.length === 6 && orgPath !== region && !orgPath.startsWith(region + '/')) problems.push(`orgPath: ${orgPath} does not lie in county ${county}`);
  } catch (e) {
    problems.push(`orgPath: ${(e as Error).message}`);
  }
  if (b.name !== undefined && (typeof b.name !== 'string' || b.name.length > 200)) problems.push('name: text of at most 200 characters');
  if (b.password !== undefined && (typeof b.password !== 'string' || b.password.length < 8)) problems.push('password: at least 8 characters');
  return problems;
}

/** Documents the body; the handler checks it (problemsOf) so every problem is named at once. */
const registrationBody = z.looseObject({
  id: z.unknown().describe('gateway id: 1–64 letters, digits, . _ -'),
  county: z.unknown().describe('6-digit county code, e.g. 370102'),
  orgPath: z.unknown().describe('org path of the school, inside the county and your subtree'),
  name: z.unknown().optional(),
  password: z.unknown().optional().describe('at least 8 characters; generated and shown once when absent'),
  replace: z.unknown().optional(),
});

export async function registerGatewayApi(api: ApiRouter, deps: ApiDeps): Promise<Closer[]> {
  const registry = deps.store as unknown as Partial<GatewayRegistry>;
  const need = (): GatewayRegistry => {
    if (!registry.getGateway || !registry.registerGateway || !registry.removeGateway) {
      throw new ApiError(501, 'no_gateway_registry', { zh: '此服务未连接网关登记库', en: 'this server has no gateway registry' });
    }
    return registry as GatewayRegistry;
  };

  api.route('POST', '/api/gateways', { permission: 'gateways.manage', scope: 'org-subtree', summary: 'Register a gateway inside your subtree (every problem listed at once)', body: registrationBody, bodyLimit: 8 * 1024 }, async (ctx: RequestContext) => {
    const reg = need();
    const body = ctx.body;
    const problems = problemsOf(body);
    if (problems.length) throw badRequest('bad_gateway', `网关信息有误：${problems.join('；')}`, `the gateway is not valid: ${problems.join('; ')}`, { problems });
    const id = body.id as string;
    const orgPath = body.orgPath as string;
    if (!ctx.principal.narrow(orgPath)) {
      throw new ApiError(403, 'outside_scope', { zh: `"${orgPath}" 不在您的管辖范围内`, en: `"${orgPath}" is outside your part of the org tree (${ctx.principal.user.orgPath})` });
    }
    const existing = await reg.getGateway(id);
    if (existing && !(body.replace === true && ctx.principal.narrow(existing.orgPath))) {
      throw new ApiError(409, 'gateway_exists', {
        zh: `网关编号 ${id} 已登记；如需修改（并重置密码）请在请求中加 "replace": true`,
        en: `gateway id ${id} is already registered; send "replace": true to change it (this resets its password)`,
      });
    }
    const password = typeof body.password === 'string' ? body.password : randomBytes(18).toString('base64url');
    const gw = await reg.registerGateway({ id, county: body.county as string, orgPath, name: typeof body.name === 'string' ? body.name : id, password });
    await audit(api, ctx, existing ? 'gateway.replace' : 'gateway.add', gw.id, gw.orgPath, { county: gw.county, name: gw.name });
    // a generated password is shown once, here
    ctx.send(existing ? 200 : 201, { gateway: gw, ...(body.password === undefined ? { password } : {}) });
  });

  api.route('POST', '/api/gateways/:gatewayId/remove', { permission: 'gateways.manage', scope: 'org-subtree', summary: 'Remove a gateway of your subtree', params: gatewayParams }, async (ctx: RequestContext, { gatewayId }: Record<string, string>) => {
    const reg = need();
    const gw = gatewayIdSchema.safeParse(gatewayId).success ? await reg.getGateway(gatewayId!) : null;
    // outside the user's subtree it does not exist for them (never reveal other schools' gateways)
    if (!gw || !ctx.principal.narrow(gw.orgPath)) {
      throw new ApiError(404, 'no_such_gateway', { zh: `网关 ${gatewayId} 不存在或不在您的管辖范围内`, en: `gateway ${gatewayId} does not exist or is outside your scope` });
    }
    await reg.removeGateway(gw.id);
    await audit(api, ctx, 'gateway.remove', gw.id, gw.orgPath, { county: gw.county, name: gw.name });
    ctx.send(200, { removed: gw.id });
  });
  return [];
}

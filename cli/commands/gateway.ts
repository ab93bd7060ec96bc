// `xiaoan gateway add|list|remove` — the gateways the centre knows (id, county, the org node of its
// school or college, name, MQTT password). A gateway's records are stored and receipted only once it
// is registered here; until then they stay on the gateway (docs/delivery.md).
import { randomBytes } from 'node:crypto';
import { parseArgs, UserError, type Command } from '../command.ts';
import { auditCli, table, withCentralStore } from '../central.ts';

const DB_USAGE = '  --database URL (or DATABASE_URL / XIAOAN_DATABASE__URL): the central PostgreSQL, or pglite:DIR.';

function need(flags: Record<string, string | true>, k: string, example: string): string {
  const v = flags[k];
  if (typeof v !== 'string' || !v) throw new UserError(`缺少 --${k} missing --${k} (e.g. --${k} ${example}); see \`xiaoan gateway add --help\``, 2);
  return v;
}

/** Checks id, county and org path with the contract's rules; every problem at once. */
export async function checkGatewayInput(id: string | undefined, county: string, orgPath: string): Promise<string[]> {
  const { gatewayIdSchema, parseOrgPath, parseRegionCode } = await import('../../contract/index.ts');
  const problems: string[] = [];
  if (!id) problems.push('ID: 缺少网关编号 the gateway id is missing (xiaoan gateway add ID …)');
  else if (!gatewayIdSchema.safeParse(id).success) problems.push(`ID: "${id}" 须为 1–64 位字母、数字、. _ - / must be 1–64 letters, digits, . _ -`);
  try {
    if (!parseRegionCode(county).county) problems.push(`--county: "${county}" 须为 6 位区县代码 must be a 6-digit county code such as 370102`);
  } catch (e) {
    problems.push(`--county: ${(e as Error).message}`);
  }
  let ref;
  try {
    ref = parseOrgPath(orgPath);
  } catch (e) {
    problems.push(`--org: ${(e as Error).message}`);
  }
  if (ref && problems.every((p) => !p.startsWith('--county')) && !(orgPath === `${county.slice(0, 2)}/${county.slice(0, 4)}/${county}` || orgPath.startsWith(`${county.slice(0, 2)}/${county.slice(0, 4)}/${county}/`))) {
    problems.push(`--org: ${orgPath} 不在区县 ${county} 之下 does not lie in county ${county}; a gateway belongs to a school or college of its county`);
  }
  return problems;
}

export const gatewayAdd: Command = {
  name: 'gateway add',
  summary: { zh: '在中心登记网关', en: 'register a gateway centrally' },
  usage:
    'gateway add ID --county CODE --org ORG_PATH [--name NAME] [--replace] [--database URL]\n\n' +
    '  ID: the gateway id (its MQTT client id and username); CODE: its 6-digit county (370102);\n' +
    '  ORG_PATH: its school or college, e.g. 37/3701/370102/3737000001.\n' +
    '  密码 The MQTT password is read from XIAOAN_GATEWAY_PASSWORD (at least 8 characters); without it one is\n' +
    '  generated and printed once. --replace changes a registered gateway (and its password).\n' + DB_USAGE,
  async run(args, io) {
    const { flags, positional } = parseArgs(args, ['replace']);
    const id = positional[0];
    const county = need(flags, 'county', '370102');
    const orgPath = need(flags, 'org', '37/3701/370102/3737000001');
    const problems = await checkGatewayInput(id, county, orgPath);
    if (problems.length) throw new UserError(['网关信息有误 the gateway is not valid:', ...problems.map((p) => '  ' + p)].join('\n'), 2);
    const given = io.env.XIAOAN_GATEWAY_PASSWORD;
    if (given !== undefined && given.length < 8) throw new UserError('XIAOAN_GATEWAY_PASSWORD 至少 8 位 must have at least 8 characters', 2);
    const password = given ?? randomBytes(18).toString('base64url');
    const name = typeof flags.name === 'string' ? flags.name : id!;
    return withCentralStore(flags, io.env, async (store) => {
      const existing = await store.getGateway(id!);
      if (existing && !flags.replace) {
        throw new UserError(`网关 ${id} 已登记 is already registered (county ${existing.county}, ${existing.orgPath}); add --replace to change it (this resets its password)`);
      }
      const { StoreInputError } = await import('../../ingest/index.ts');
      let gw;
      try {
        gw = await store.registerGateway({ id: id!, county, orgPath, name, password });
      } catch (e) {
        if (e instanceof StoreInputError) throw new UserError(`--${e.field === 'orgPath' ? 'org' : e.field}: ${e.message}`, 2);
        throw e;
      }
      await auditCli(store, existing ? 'gateway.replace' : 'gateway.add', gw.id, gw.orgPath, { county: gw.county, name: gw.name });
      io.out(JSON.stringify({ ...gw, ...(given === undefined ? { password } : {}) }));
      io.err(`网关 ${gw.id} 已登记 registered in ${gw.orgPath}` + (given === undefined ? '; 请妥善保存以上密码 keep the generated password: it is shown only now (edge uplink.password)' : ''));
      return 0;
    });
  },
};

export const gatewayList: Command = {
  name: 'gateway list',
  summary: { zh: '列出中心登记的网关', en: 'list the gateways registered centrally' },
  usage: 'gateway list [--org ORG_PATH] [--json] [--database URL]\n\n  --org: only this part of the org tree (default the whole province 37).\n' + DB_USAGE,
  async run(args, io) {
    const { flags } = parseArgs(args, ['json']);
    const { scopeOf } = await import('../../ingest/index.ts');
    let scope;
    try {
      scope = scopeOf(typeof flags.org === 'string' ? flags.org : '37');
    } catch (e) {
      throw new UserError(`--org: ${(e as Error).message}`, 2);
    }
    return withCentralStore(flags, io.env, async (store) => {
      const rows = await store.queries.listGateways(scope);
      if (flags.json) {
        for (const r of rows) io.out(JSON.stringify(r));
      } else {
        const view = rows.map((r) => ({ ...r, lastSeen: r.lastSeen ? new Date(r.lastSeen).toISOString() : '' }));
        for (const l of table(['id', 'county', 'orgPath', 'name', 'state', 'lastSeen', 'devices'], view)) io.out(l);
      }
      io.err(`${rows.length} 个网关 gateway(s)`);
      return 0;
    });
  },
};

export const gatewayRemove: Command = {
  name: 'gateway remove',
  summary: { zh: '注销中心登记的网关', en: 'remove a gateway from the central registry' },
  usage:
    'gateway remove ID [--database URL]\n\n' +
    '  Its stored readings, events and alerts stay as history; its records sent afterwards are no longer\n' +
    '  stored (they stay on the gateway) and it can no longer log in to the embedded broker.\n' + DB_USAGE,
  async run(args, io) {
    const { flags, positional } = parseArgs(args);
    const id = positional[0];
    if (!id || positional.length > 1) throw new UserError('需要一个网关编号 give exactly one gateway ID: xiaoan gateway remove ID', 2);
    return withCentralStore(flags, io.env, async (store) => {
      const gw = await store.getGateway(id);
      if (!gw) throw new UserError(`网关 ${id} 未登记 is not registered; \`xiaoan gateway list\` shows those that are`);
      await store.removeGateway(id);
      await auditCli(store, 'gateway.remove', id, gw.orgPath, { county: gw.county, name: gw.name });
      io.out(JSON.stringify({ removed: id, orgPath: gw.orgPath }));
      io.err(`网关 ${id} 已注销 removed`);
      return 0;
    });
  },
};

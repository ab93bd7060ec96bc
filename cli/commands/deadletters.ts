// `xiaoan deadletters list|replay` — what the centre set aside and why, and putting it back through
// the worker's own parse → store path once the cause is fixed (a gateway registered, a bug fixed).
import { parseArgs, UserError, type Command } from '../command.ts';
import { auditCli, parseSince, table, withCentralStore } from '../central.ts';

const FILTERS =
  '  --reason R (topic, not_json, schema, gateway_mismatch, storage; unknown_gateway on old rows), --gateway ID,\n' +
  '  --since 7d|12h|30m|DATE, --id N[,N…], --limit N (default 100).\n' +
  '  --database URL (or DATABASE_URL / XIAOAN_DATABASE__URL): the central PostgreSQL, or pglite:DIR.';

async function filterOf(flags: Record<string, string | true>) {
  const { DEAD_LETTER_REASONS, LEGACY_DEAD_LETTER_REASONS } = await import('../../ingest/index.ts');
  const reasons: readonly string[] = [...DEAD_LETTER_REASONS, ...LEGACY_DEAD_LETTER_REASONS];
  const f: import('../../ingest/index.ts').DeadLetterFilter = {};
  if (typeof flags.reason === 'string') {
    if (!reasons.includes(flags.reason)) throw new UserError(`--reason "${flags.reason}" is not one of ${reasons.join(', ')}`, 2);
    f.reason = flags.reason;
  }
  if (typeof flags.gateway === 'string') f.gatewayId = flags.gateway;
  if (typeof flags.since === 'string') {
    try {
      f.since = parseSince(flags.since);
    } catch (e) {
      throw new UserError((e as Error).message, 2);
    }
  }
  if (typeof flags.id === 'string') {
    const ids = flags.id.split(',').map((x) => x.trim());
    if (ids.some((x) => !/^\d+$/.test(x))) throw new UserError(`--id "${flags.id}" must be numbers separated by commas`, 2);
    f.ids = ids.map(Number);
  }
  if (typeof flags.limit === 'string') {
    if (!/^\d+$/.test(flags.limit)) throw new UserError(`--limit "${flags.limit}" must be a whole number`, 2);
    f.limit = Number(flags.limit);
  }
  return f;
}

export const deadlettersList: Command = {
  name: 'deadletters list',
  summary: { zh: '列出死信（被搁置的消息与记录）', en: 'list dead letters (messages and records set aside)' },
  usage: 'deadletters list [filters] [--json]\n\n' + FILTERS,
  async run(args, io) {
    const { flags } = parseArgs(args, ['json']);
    const filter = await filterOf(flags);
    const { scopeOf } = await import('../../ingest/index.ts');
    return withCentralStore(flags, io.env, async (store) => {
      const rows = await store.queries.deadLetters(scopeOf('37'), filter);
      if (flags.json) {
        for (const r of rows) io.out(JSON.stringify(r));
      } else {
        const view = rows.map((r) => ({
          ...r,
          received: new Date(r.receivedAt).toISOString().replace(/\.\d+Z$/, 'Z'),
          gateway: r.gatewayId ?? '',
          detail: r.detail.length > 80 ? r.detail.slice(0, 79) + '…' : r.detail,
          replayed: r.replayedAt ? (r.replayResult ?? '').split(':')[0] : '',
        }));
        for (const l of table(['id', 'received', 'reason', 'unit', 'gateway', 'replayed', 'detail'], view)) io.out(l);
      }
      io.err(`${rows.length} 条死信 dead letter(s)`);
      return 0;
    });
  },
};

export const deadlettersReplay: Command = {
  name: 'deadletters replay',
  summary: { zh: '重放死信（经接入的解析与存储流程）', en: 'replay dead letters through the ingest parse → store path' },
  usage:
    'deadletters replay (--id N[,N…] | --reason R | --gateway ID | --since D) [--again] [--dry-run] [--json]\n\n' +
    '  Rows already replayed are left out unless --again; replaying twice stores nothing twice (gateway, seq).\n' +
    '  Each row is marked with when it was replayed and what came of it. Rules are not run on replayed records.\n' + FILTERS,
  async run(args, io) {
    const { flags } = parseArgs(args, ['again', 'dry-run', 'json']);
    const filter = await filterOf(flags);
    if (!filter.ids && !filter.reason && !filter.gatewayId && filter.since === undefined) {
      throw new UserError('请选择要重放的死信 choose what to replay: --id, --reason, --gateway or --since (see `xiaoan deadletters list`)', 2);
    }
    if (!flags.again) filter.unreplayed = true;
    const { scopeOf, replayDeadLetter } = await import('../../ingest/index.ts');
    return withCentralStore(flags, io.env, async (store) => {
      const rows = (await store.queries.deadLetters(scopeOf('37'), filter)).reverse(); // oldest first
      if (flags['dry-run']) {
        for (const l of table(['id', 'reason', 'unit', 'topic'], rows as unknown as Array<Record<string, unknown>>)) io.out(l);
        io.err(`${rows.length} 条将被重放 would be replayed (dry run)`);
        return 0;
      }
      const results = [];
      for (const row of rows) {
        const r = await replayDeadLetter(store, row);
        results.push(r);
        if (flags.json) io.out(JSON.stringify(r));
      }
      if (!flags.json) for (const l of table(['id', 'outcome', 'stored', 'duplicates', 'message'], results as unknown as Array<Record<string, unknown>>)) io.out(l);
      const failed = results.filter((r) => r.outcome === 'failed' || r.outcome === 'partial').length;
      const stored = results.reduce((n, r) => n + r.stored, 0);
      await auditCli(store, 'deadletters.replay', results.map((r) => r.id).join(',').slice(0, 500), null, { rows: results.length, stored, failed });
      io.err(`重放 ${results.length} 条 replayed ${results.length} row(s): ${stored} record(s) stored, ${failed} still failing`);
      return failed ? 1 : 0;
    });
  },
};

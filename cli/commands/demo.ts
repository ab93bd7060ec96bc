import { parseArgs, untilSignal, UserError, type Command } from '../command.ts';
import { DEMO, DEMO_USERS } from '../demo-school.ts';

export const demo: Command = {
  name: 'demo',
  summary: { zh: '在一个进程中运行全部层级与一所模拟学校', en: 'run every tier and a simulated school in one process' },
  usage: 'demo [--data DIR] [--port N] [--host ADDR]\n\n' +
    '环境变量 Environment: PORT (8080), DATABASE_URL (pglite:<data>/pg), XIAOAN_DATA (./data), XIAOAN_DEMO_PASSWORD',
  async run(args, io) {
    const { flags } = parseArgs(args);
    const port = Number(flags.port ?? io.env.PORT ?? 8080);
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UserError(`--port/PORT "${flags.port ?? io.env.PORT}" must be a port number 0–65535`);
    const dataDir = String(flags.data ?? io.env.XIAOAN_DATA ?? './data');
    const password = io.env.XIAOAN_DEMO_PASSWORD || undefined;
    if (password !== undefined && password.length < 8) throw new UserError('XIAOAN_DEMO_PASSWORD must be at least 8 characters');

    const { startDemo } = await import('../demo.ts');
    let demoRun;
    try {
      demoRun = await startDemo({
        dataDir,
        databaseUrl: io.env.DATABASE_URL || undefined,
        port,
        host: typeof flags.host === 'string' ? flags.host : io.env.HOST || '127.0.0.1',
        password,
      });
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      if (err.code === 'EADDRINUSE') throw new UserError(`端口被占用 port ${port} is in use; set PORT=another port or stop what uses it`);
      throw e;
    }
    // a password the operator chose (XIAOAN_DEMO_PASSWORD) is never echoed; a generated one is shown once, here
    const pw = demoRun.passwordGenerated
      ? `${demoRun.password}  (已生成并加密保存 generated, kept sealed in ${dataDir}/demo-secrets.json)`
      : '(XIAOAN_DEMO_PASSWORD 中设置的密码 the one you set in XIAOAN_DEMO_PASSWORD)';
    io.out([
      '',
      `校安 Xiaoan 演示已启动 demo running: ${demoRun.url}`,
      `学校 School: ${DEMO.school.zh} ${DEMO.school.en} (${DEMO.school.orgPath}), 网关 gateway ${DEMO.gatewayId}`,
      `约 20 秒后开始消防演练 A fire drill starts in about 20 s; its alarm appears on the console, marked 演练 DRILL.`,
      '',
      '演示账号 Demo accounts (password below):',
      ...DEMO_USERS.map((u) => `  ${u.username.padEnd(9)} ${u.role.padEnd(7)} ${u.orgPath.padEnd(28)} ${u.displayName}`),
      `  密码 password: ${pw}`,
      '',
      `网关本地接口 Gateway REST: ${demoRun.gateway.http?.url}/api/devices  令牌 token (Authorization: Bearer): ${demoRun.gateway.http?.token}`,
      '',
      '按 Ctrl+C 停止 Press Ctrl+C to stop.',
    ].join('\n'));
    return untilSignal(() => demoRun.stop());
  },
};

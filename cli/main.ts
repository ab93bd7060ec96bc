// `xiaoan` — one program for every tier. Finds the subcommand (one or two words), runs it, and
// turns a UserError into one line on stderr with no stack trace.
import { commands } from './commands/index.ts';
import { UserError, type CommandIo } from './command.ts';

const defaultIo: CommandIo = {
  out: (l) => process.stdout.write(l + '\n'),
  err: (l) => process.stderr.write(l + '\n'),
  env: process.env,
};

export function helpText(): string {
  const width = Math.max(...commands.map((c) => c.name.length));
  return [
    '校安 Xiaoan — 校园安全设备平台 campus-safety device platform',
    '',
    '用法 Usage: xiaoan <command> [options]',
    '',
    ...commands.map((c) => `  ${c.name.padEnd(width)}  ${c.summary.zh} — ${c.summary.en}`),
    '',
    'xiaoan <command> --help 查看命令用法 shows a command\'s usage.',
  ].join('\n');
}

export async function main(argv: string[], io: CommandIo = defaultIo): Promise<number> {
  if (argv.length === 0 || argv[0] === '--help' || argv[0] === '-h' || argv[0] === 'help') {
    io.out(helpText());
    return argv.length === 0 ? 2 : 0;
  }
  const two = argv.slice(0, 2).join(' ');
  const cmd = commands.find((c) => c.name === two) ?? commands.find((c) => c.name === argv[0]);
  if (!cmd) {
    io.err(`xiaoan: 未知命令 unknown command "${argv.slice(0, 2).join(' ')}"; run \`xiaoan --help\` for the list`);
    return 2;
  }
  const rest = argv.slice(cmd.name.split(' ').length);
  if (rest.includes('--help') || rest.includes('-h')) {
    io.out(`${cmd.summary.zh} — ${cmd.summary.en}\n\n用法 Usage: xiaoan ${cmd.usage}`);
    return 0;
  }
  try {
    return await cmd.run(rest, io);
  } catch (e) {
    if (e instanceof UserError) {
      io.err(`xiaoan ${cmd.name}: ${e.message}`);
      return e.exitCode;
    }
    io.err(`xiaoan ${cmd.name}: ${(e as Error)?.message ?? String(e)}`);
    if (io.env.XIAOAN_DEBUG) io.err(String((e as Error)?.stack));
    return 1;
  }
}

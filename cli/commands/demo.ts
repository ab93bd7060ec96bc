import type { Command } from '../command.ts';

export const demo: Command = {
  name: 'demo',
  summary: { zh: '在一个进程中运行全部层级与模拟学校', en: 'run every tier and a simulated school in one process' },
  usage: 'demo [--data DIR] [--port N]',
  async run(_args, io) {
    io.err('demo: not wired yet');
    return 1;
  },
};

// Every subcommand, in the order `xiaoan --help` lists them. Add a command here once.
import type { Command } from '../command.ts';
import { demo } from './demo.ts';

export const commands: Command[] = [demo];

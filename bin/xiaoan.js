#!/usr/bin/env node
// The `xiaoan` command. TypeScript sources run through tsx's loader, so the same files serve
// development, tests and production images without a separate build output.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../cli/main.ts');
process.exitCode = await main(process.argv.slice(2));

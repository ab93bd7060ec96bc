// Every subcommand, in the order `xiaoan --help` lists them. Add a command here once.
import type { Command } from '../command.ts';
import { demo } from './demo.ts';
import { configCheck, configEnv } from './config.ts';
import { edge, deviceAdd, deviceList, deviceTest, deviceRemove, deviceImport } from './edge.ts';
import { serve, userAdd } from './serve.ts';
import { ingest } from './ingest.ts';
import { rulesCheck, rulesBacktest } from './rules.ts';
import { deviceProfiles, deviceRead, deviceDiscover } from './device-read.ts';
import { gatewayAdd, gatewayList, gatewayRemove } from './gateway.ts';
import { deadlettersList, deadlettersReplay } from './deadletters.ts';

export const commands: Command[] = [
  // tiers
  demo, edge, ingest, serve,
  // technicians
  deviceProfiles, deviceRead, deviceDiscover, deviceAdd, deviceList, deviceTest, deviceRemove, deviceImport,
  // rule authors
  rulesCheck, rulesBacktest,
  // operators
  gatewayAdd, gatewayList, gatewayRemove, deadlettersList, deadlettersReplay, userAdd, configCheck, configEnv,
];

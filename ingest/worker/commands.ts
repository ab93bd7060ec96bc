// Commands down to gateways (`…/{gateway}/cmd/{kind}`, QoS 1) and their answers on `cmd-result`:
// one pending entry per command id with its own timeout (injected clock).
import { buildTopic, commandSchema, describeZodError, type Clock, type Command, type CommandResult, type Logger } from '../../contract/index.ts';
import type { CommandSender, GatewayInfo } from '../types.ts';
import type { Publisher } from './receipts.ts';

export class CommandTimeoutError extends Error {
  readonly retryable = true;
  constructor(readonly gatewayId: string, readonly commandId: string, ms: number) {
    super(`gateway ${gatewayId} did not answer command ${commandId} within ${ms} ms (网关未在时限内应答命令); it may be offline — try again later`);
    this.name = 'CommandTimeoutError';
  }
}

interface PendingCommand {
  gatewayId: string;
  resolve: (r: CommandResult) => void;
  reject: (e: Error) => void;
  timer: unknown;
}

export class GatewayCommands implements CommandSender {
  private pending = new Map<string, PendingCommand>();
  constructor(
    private readonly clock: Clock,
    private readonly gatewayOf: (id: string) => Promise<GatewayInfo | null>,
    private readonly control: () => (Publisher & { state: string }) | undefined,
    private readonly log: Logger,
  ) {}

  async send(gatewayId: string, command: Command, timeoutMs = 10_000): Promise<CommandResult> {
    const parsed = commandSchema.safeParse(command);
    if (!parsed.success) throw new Error(`command for ${gatewayId} is not valid: ${describeZodError(parsed.error)}`);
    const gw = await this.gatewayOf(gatewayId);
    if (!gw) throw new Error(`gateway ${gatewayId} is not registered centrally (网关未登记); register it first`);
    const lane = this.control();
    if (!lane || lane.state !== 'connected') {
      throw Object.assign(new Error(`ingest worker is not connected to the broker; command ${command.id} not sent — try again`), { retryable: true });
    }
    if (this.pending.has(command.id)) throw new Error(`command id ${command.id} is already awaiting an answer`);
    const result = this.await(gatewayId, command.id, timeoutMs);
    try {
      await lane.publish(buildTopic({ county: gw.county, gatewayId, channel: 'cmd', sub: command.kind }), JSON.stringify(parsed.data), 1);
    } catch (e) {
      this.drop(command.id);
      throw e;
    }
    this.log.info('command sent', { gateway: gatewayId, id: command.id, kind: command.kind });
    return result;
  }

  /** A gateway's answer; false when it is not ours (another worker's command, or too late). */
  answer(gatewayId: string, result: CommandResult): boolean {
    const p = this.pending.get(result.id);
    if (!p || p.gatewayId !== gatewayId) return false;
    this.drop(result.id);
    p.resolve(result);
    return true;
  }

  /** Rejects every command still waiting (the worker stops). */
  cancelAll(): void {
    for (const [id, p] of this.pending) {
      this.clock.clearTimeout(p.timer);
      p.reject(new Error(`ingest worker stopped before gateway ${p.gatewayId} answered command ${id}`));
    }
    this.pending.clear();
  }

  private await(gatewayId: string, id: string, timeoutMs: number): Promise<CommandResult> {
    return new Promise<CommandResult>((resolve, reject) => {
      const timer = this.clock.setTimeout(() => {
        this.pending.delete(id);
        reject(new CommandTimeoutError(gatewayId, id, timeoutMs));
      }, timeoutMs);
      this.pending.set(id, { gatewayId, resolve, reject, timer });
    });
  }

  private drop(id: string): void {
    const p = this.pending.get(id);
    if (!p) return;
    this.clock.clearTimeout(p.timer);
    this.pending.delete(id);
  }
}

// Packet size limits for the aedes brokers, enforced at the socket before a packet is buffered.
//
// aedes' parser (mqtt-packet) has no size limit: it keeps every byte of a packet until the last
// one arrives, so a 16 MB CONNECT sent by anyone who can reach the port was held in memory before
// authentication. PacketSizeGuard reads each packet's fixed header (MQTT 3.1.1 §2.2: one type
// byte, then the Remaining Length, 1–4 bytes of 7 bits each) as bytes arrive and refuses a packet
// whose announced size is over the limit, before its body is read. Until the login is accepted the
// limit is small (a CONNECT with its will) and the bytes of all packets together are capped too.
import type { Socket } from 'node:net';
import type { Logger } from './runtime.ts';

export interface PacketLimits {
  /** largest packet before the login is accepted (CONNECT with user name, password and will) */
  beforeAuthBytes: number;
  /** largest packet after it (a PUBLISH with its topic and payload) */
  afterAuthBytes: number;
}

/** Bytes a client may send before its login is accepted, all packets together (CONNECT plus what it pipelines). */
const BEFORE_AUTH_TOTAL_FACTOR = 4;

export class PacketSizeGuard {
  private authenticated = false;
  private bytesBeforeAuth = 0;
  /** position in the current packet: header byte, length bytes, or body bytes left */
  private stage: 'type' | 'length' | 'body' = 'type';
  private length = 0;
  private lengthBytes = 0;
  private bodyLeft = 0;

  constructor(private readonly limits: PacketLimits) {}

  /** The login was accepted: from now on the larger limit applies. */
  accept(): void {
    this.authenticated = true;
  }

  /** Count a chunk read from the socket; returns why it must be refused, or null. */
  feed(chunk: Buffer): string | null {
    if (!this.authenticated) {
      this.bytesBeforeAuth += chunk.length;
      const cap = this.limits.beforeAuthBytes * BEFORE_AUTH_TOTAL_FACTOR;
      if (this.bytesBeforeAuth > cap) return `more than ${cap} bytes before the login was accepted`;
    }
    let i = 0;
    while (i < chunk.length) {
      if (this.stage === 'body') {
        const take = Math.min(this.bodyLeft, chunk.length - i);
        this.bodyLeft -= take;
        i += take;
        if (this.bodyLeft === 0) this.stage = 'type';
        continue;
      }
      const byte = chunk[i++]!;
      if (this.stage === 'type') {
        this.stage = 'length';
        this.length = 0;
        this.lengthBytes = 0;
        continue;
      }
      // [MQTT-2.2.3] Remaining Length: 7 bits per byte, least significant first, at most 4 bytes
      this.length += (byte & 0x7f) * 128 ** this.lengthBytes++;
      if (byte & 0x80) {
        if (this.lengthBytes >= 4) return 'malformed remaining length';
        continue;
      }
      const size = 1 + this.lengthBytes + this.length;
      const limit = this.authenticated ? this.limits.afterAuthBytes : this.limits.beforeAuthBytes;
      if (size > limit) return `packet of ${size} bytes is over the limit of ${limit}${this.authenticated ? '' : ' before login'}`;
      this.bodyLeft = this.length;
      this.stage = this.length === 0 ? 'type' : 'body';
    }
    return null;
  }
}

/**
 * Watch what aedes reads from `socket` (call after broker.handle(socket), so aedes' 'readable'
 * listener keeps the stream paused and 'data' fires only for the bytes it reads) and destroy the
 * socket at the first packet over the limit. Returns the guard, for accept() after the login.
 */
export function guardSocket(socket: Socket, limits: PacketLimits, log: Logger): PacketSizeGuard {
  const guard = new PacketSizeGuard(limits);
  const onData = (chunk: Buffer) => {
    const refused = guard.feed(chunk);
    if (!refused) return;
    socket.off('data', onData);
    log.warn('MQTT connection closed: packet too large (报文过大，连接已关闭)', { remote: socket.remoteAddress, reason: refused });
    socket.destroy();
  };
  socket.on('data', onData);
  return guard;
}

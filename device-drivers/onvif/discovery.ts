// WS-Discovery (OASIS WS-Discovery 2005/04, as ONVIF Core §7.3 uses it): send a Probe for
// NetworkVideoTransmitters and collect ProbeMatches. By default to the multicast group
// 239.255.255.250:3702; with `address` as unicast to one host (tests use 127.0.0.1).
import { randomUUID } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { checkXml, leafText, leafTexts } from './xml.ts';

export interface DiscoveredCamera {
  urn: string;
  xaddrs: string[];
  /** onvif://HOST:PORT to enrol it with (add USER:PASS@) */
  url: string;
  name?: string;
  hardware?: string;
  location?: string;
  from: string;
}

export async function discoverOnvif(opts: { address?: string; port?: number; timeoutMs?: number } = {}): Promise<DiscoveredCamera[]> {
  const messageId = `urn:uuid:${randomUUID()}`;
  const probe =
    `<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery" xmlns:dn="http://www.onvif.org/ver10/network/wsdl">` +
    `<s:Header><a:MessageID>${messageId}</a:MessageID><a:To>urn:schemas-xmlsoap-org:ws:2005:04:discovery</a:To><a:Action>http://schemas.xmlsoap.org/ws/2005/04/discovery/Probe</a:Action></s:Header>` +
    `<s:Body><d:Probe><d:Types>dn:NetworkVideoTransmitter</d:Types></d:Probe></s:Body></s:Envelope>`;
  const sock = createSocket({ type: 'udp4', reuseAddr: true });
  const found = new Map<string, DiscoveredCamera>();
  sock.on('message', (msg, rinfo) => {
    try {
      const xml = msg.toString('utf8');
      checkXml(xml, 64 * 1024);
      const relates = leafText(xml, 'RelatesTo');
      if (relates && relates !== messageId) return;
      const urn = leafText(xml, 'Address');
      const xaddrs = (leafText(xml, 'XAddrs') ?? '').split(/\s+/).filter((x) => /^https?:\/\/[^\s]+$/.test(x));
      if (!urn || !xaddrs.length || found.has(urn)) return;
      const scopes = leafTexts(xml, 'Scopes').join(' ').split(/\s+/);
      const scope = (k: string) => {
        const s = scopes.find((x) => x.startsWith(`onvif://www.onvif.org/${k}/`));
        return s ? decodeURIComponent(s.slice(`onvif://www.onvif.org/${k}/`.length)).slice(0, 100) : undefined;
      };
      const first = new URL(xaddrs[0]!);
      found.set(urn, {
        urn: urn.slice(0, 200),
        xaddrs,
        url: `onvif://${first.hostname}:${first.port || 80}`,
        name: scope('name'),
        hardware: scope('hardware'),
        location: scope('location'),
        from: rinfo.address,
      });
    } catch {
      /* a reply we cannot read is not a camera we can enrol */
    }
  });
  await new Promise<void>((resolve, reject) => {
    sock.once('error', reject);
    sock.bind(0, () => resolve());
  });
  try {
    await new Promise<void>((resolve, reject) =>
      sock.send(probe, opts.port ?? 3702, opts.address ?? '239.255.255.250', (e) => (e ? reject(e) : resolve())),
    );
    await new Promise((r) => setTimeout(r, opts.timeoutMs ?? 3000));
  } finally {
    sock.close();
  }
  return [...found.values()];
}

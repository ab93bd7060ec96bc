// An ONVIF camera of our own (no third-party ONVIF device exists to test against): the device,
// media and event services over SOAP 1.2 with WS-UsernameToken digest authentication, PullPoint
// subscriptions with renewal and expiry, a snapshot URL, and a WS-Discovery responder on a UDP
// port of its own (tests probe it by unicast on 127.0.0.1, never the multicast group).
// `hostile(mode)` turns it into a broken or malicious camera for the driver's defences.
import { createHash, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import type { Socket } from 'node:net';
import { escapeXml, leafText, soapOperation } from './xml.ts';

export type HostileMode = 'none' | 'huge' | 'entity-expansion' | 'external-entity' | 'wrong-shape' | 'garbage' | 'slow' | 'fault';

export interface OnvifSimulatorOptions {
  username?: string;
  password?: string;
  host?: string;
  port?: number;
  /** UDP port of the WS-Discovery responder (0 = any free port; the real one is 3702) */
  discoveryPort?: number;
  manufacturer?: string;
  model?: string;
  serialNumber?: string;
  /** longest a PullMessages request waits for an event before answering empty (ms) */
  pullWaitMs?: number;
}

export interface OnvifSimulator {
  port: number;
  discoveryPort: number;
  /** onvif://USER:PASS@HOST:PORT */
  url: string;
  xaddr: string;
  /** raise an ONVIF event, e.g. emit('tns1:RuleEngine/CellMotionDetector/Motion', { IsMotion: true }) */
  emit(topic: string, data: Record<string, string | number | boolean>, source?: Record<string, string>): void;
  hostile(mode: HostileMode, opts?: { bytes?: number; operations?: string[] }): void;
  /** forget every PullPoint subscription, as a camera does when it reboots */
  dropSubscriptions(): void;
  stats(): { requests: Record<string, number>; subscriptions: number; renewals: number; authFailures: number; discoveryProbes: number };
  close(): Promise<void>;
}

const NS =
  'xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:tt="http://www.onvif.org/ver10/schema" xmlns:tds="http://www.onvif.org/ver10/device/wsdl" ' +
  'xmlns:trt="http://www.onvif.org/ver10/media/wsdl" xmlns:tev="http://www.onvif.org/ver10/events/wsdl" xmlns:wsnt="http://docs.oasis-open.org/wsn/b-2" ' +
  'xmlns:wsa="http://www.w3.org/2005/08/addressing" xmlns:tns1="http://www.onvif.org/ver10/topics" xmlns:ter="http://www.onvif.org/ver10/error"';

const envelope = (body: string, header = '') => `<?xml version="1.0" encoding="UTF-8"?><s:Envelope ${NS}><s:Header>${header}</s:Header><s:Body>${body}</s:Body></s:Envelope>`;

const fault = (code: string, sub: string, reason: string) =>
  envelope(`<s:Fault><s:Code><s:Value>${code}</s:Value><s:Subcode><s:Value>${sub}</s:Value></s:Subcode></s:Code><s:Reason><s:Text xml:lang="en">${escapeXml(reason)}</s:Text></s:Reason></s:Fault>`);

// The smallest well-formed JPEG-framed bytes: SOI, a comment, EOI. Enough for a snapshot fetch test.
const SNAPSHOT = Buffer.concat([Buffer.from([0xff, 0xd8, 0xff, 0xfe, 0x00, 0x0f]), Buffer.from('xiaoan-sim-jpg'), Buffer.from([0xff, 0xd9])]);

interface PullPoint {
  id: string;
  expires: number;
  queue: string[];
  waiter: (() => void) | null;
}

function isoDuration(s: string | undefined, fallbackMs: number): number {
  const m = s ? /^PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?$/.exec(s.trim()) : null;
  if (!m) return fallbackMs;
  return ((Number(m[1] ?? 0) * 60 + Number(m[2] ?? 0)) * 60 + Number(m[3] ?? 0)) * 1000;
}

export async function startOnvifSimulator(opts: OnvifSimulatorOptions = {}): Promise<OnvifSimulator> {
  const username = opts.username ?? 'admin';
  const password = opts.password ?? 'admin123';
  const host = opts.host ?? '127.0.0.1';
  const pullWaitMs = opts.pullWaitMs ?? 500;
  const uuid = randomUUID();
  const requests: Record<string, number> = {};
  const pullPoints = new Map<string, PullPoint>();
  let renewals = 0;
  let authFailures = 0;
  let discoveryProbes = 0;
  let hostile: { mode: HostileMode; bytes: number; operations?: string[] } = { mode: 'none', bytes: 0 };
  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();
  let port = 0;
  const base = () => `http://${host}:${port}`;

  const DIGEST_REALM = 'xiaoan-sim';
  const digestNonce = randomUUID().replace(/-/g, '');
  function digestOk(header: string | undefined): boolean {
    if (!header || !/^Digest /i.test(header)) return false;
    const p: Record<string, string> = {};
    for (const m of header.slice(7).matchAll(/(\w+)=(?:"([^"]*)"|([^,\s]*))/g)) p[m[1]!] = m[2] ?? m[3] ?? '';
    if (p.username !== username || p.nonce !== digestNonce || p.realm !== DIGEST_REALM) return false;
    const md5 = (v: string) => createHash('md5').update(v).digest('hex');
    const ha1 = md5(`${username}:${DIGEST_REALM}:${password}`);
    const ha2 = md5(`GET:${p.uri}`);
    const want = p.qop ? md5(`${ha1}:${digestNonce}:${p.nc}:${p.cnonce}:${p.qop}:${ha2}`) : md5(`${ha1}:${digestNonce}:${ha2}`);
    return p.response === want;
  }

  function authorised(xml: string): boolean {
    // WS-Security UsernameToken Profile 1.0 §3.1: PasswordDigest = Base64(SHA-1(nonce + created + password))
    const user = leafText(xml, 'Username');
    const digest = leafText(xml, 'Password');
    const nonce = leafText(xml, 'Nonce');
    const created = leafText(xml, 'Created');
    if (!user || !digest || !nonce || !created) return false;
    const want = createHash('sha1').update(Buffer.concat([Buffer.from(nonce, 'base64'), Buffer.from(created), Buffer.from(password)])).digest('base64');
    return user === username && digest === want;
  }

  function notification(topic: string, data: Record<string, string | number | boolean>, source: Record<string, string>): string {
    const items = (o: Record<string, unknown>) => Object.entries(o).map(([k, v]) => `<tt:SimpleItem Name="${escapeXml(k)}" Value="${escapeXml(String(v))}"/>`).join('');
    return (
      `<wsnt:NotificationMessage><wsnt:Topic Dialect="http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet">${escapeXml(topic)}</wsnt:Topic>` +
      `<wsnt:Message><tt:Message UtcTime="${new Date().toISOString()}" PropertyOperation="Changed">` +
      `<tt:Source>${items(source)}</tt:Source><tt:Data>${items(data)}</tt:Data></tt:Message></wsnt:Message></wsnt:NotificationMessage>`
    );
  }

  const profilesXml = () =>
    `<trt:GetProfilesResponse><trt:Profiles token="main" fixed="true"><tt:Name>MainStream</tt:Name>` +
    `<tt:VideoSourceConfiguration token="vsc0"><tt:Name>vsc0</tt:Name><tt:UseCount>2</tt:UseCount><tt:SourceToken>vs0</tt:SourceToken><tt:Bounds x="0" y="0" width="1920" height="1080"/></tt:VideoSourceConfiguration>` +
    `<tt:VideoEncoderConfiguration token="vec0"><tt:Name>vec0</tt:Name><tt:UseCount>1</tt:UseCount><tt:Encoding>H264</tt:Encoding><tt:Resolution><tt:Width>1920</tt:Width><tt:Height>1080</tt:Height></tt:Resolution><tt:Quality>5</tt:Quality><tt:RateControl><tt:FrameRateLimit>25</tt:FrameRateLimit><tt:EncodingInterval>1</tt:EncodingInterval><tt:BitrateLimit>4096</tt:BitrateLimit></tt:RateControl></tt:VideoEncoderConfiguration>` +
    `</trt:Profiles><trt:Profiles token="sub" fixed="true"><tt:Name>SubStream</tt:Name>` +
    `<tt:VideoSourceConfiguration token="vsc0"><tt:Name>vsc0</tt:Name><tt:UseCount>2</tt:UseCount><tt:SourceToken>vs0</tt:SourceToken><tt:Bounds x="0" y="0" width="1920" height="1080"/></tt:VideoSourceConfiguration>` +
    `<tt:VideoEncoderConfiguration token="vec1"><tt:Name>vec1</tt:Name><tt:UseCount>1</tt:UseCount><tt:Encoding>H264</tt:Encoding><tt:Resolution><tt:Width>640</tt:Width><tt:Height>360</tt:Height></tt:Resolution><tt:Quality>4</tt:Quality><tt:RateControl><tt:FrameRateLimit>15</tt:FrameRateLimit><tt:EncodingInterval>1</tt:EncodingInterval><tt:BitrateLimit>512</tt:BitrateLimit></tt:RateControl></tt:VideoEncoderConfiguration>` +
    `</trt:Profiles></trt:GetProfilesResponse>`;

  async function operation(op: string, xml: string, path: string): Promise<{ status: number; body: string } | 'wait'> {
    const now = Date.now();
    switch (op) {
      case 'GetSystemDateAndTime': {
        const d = new Date();
        return {
          status: 200,
          body: envelope(
            `<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime><tt:DateTimeType>NTP</tt:DateTimeType><tt:DaylightSavings>false</tt:DaylightSavings><tt:TimeZone><tt:TZ>CST-8</tt:TZ></tt:TimeZone>` +
              `<tt:UTCDateTime><tt:Time><tt:Hour>${d.getUTCHours()}</tt:Hour><tt:Minute>${d.getUTCMinutes()}</tt:Minute><tt:Second>${d.getUTCSeconds()}</tt:Second></tt:Time>` +
              `<tt:Date><tt:Year>${d.getUTCFullYear()}</tt:Year><tt:Month>${d.getUTCMonth() + 1}</tt:Month><tt:Day>${d.getUTCDate()}</tt:Day></tt:Date></tt:UTCDateTime></tds:SystemDateAndTime></tds:GetSystemDateAndTimeResponse>`,
          ),
        };
      }
      case 'GetServices':
        // ONVIF Core §8.1.2.1: optional on Profile S devices before 2.0; answering "not supported" exercises the GetCapabilities path
        return { status: 400, body: fault('s:Receiver', 'ter:ActionNotSupported', 'Optional Action Not Implemented') };
      case 'GetCapabilities':
        return {
          status: 200,
          body: envelope(
            `<tds:GetCapabilitiesResponse><tds:Capabilities>` +
              `<tt:Device><tt:XAddr>${base()}/onvif/device_service</tt:XAddr></tt:Device>` +
              `<tt:Events><tt:XAddr>${base()}/onvif/events_service</tt:XAddr><tt:WSSubscriptionPolicySupport>false</tt:WSSubscriptionPolicySupport><tt:WSPullPointSupport>true</tt:WSPullPointSupport><tt:WSPausableSubscriptionManagerInterfaceSupport>false</tt:WSPausableSubscriptionManagerInterfaceSupport></tt:Events>` +
              `<tt:Media><tt:XAddr>${base()}/onvif/media_service</tt:XAddr><tt:StreamingCapabilities><tt:RTPMulticast>false</tt:RTPMulticast><tt:RTP_TCP>true</tt:RTP_TCP><tt:RTP_RTSP_TCP>true</tt:RTP_RTSP_TCP></tt:StreamingCapabilities></tt:Media>` +
              `</tds:Capabilities></tds:GetCapabilitiesResponse>`,
          ),
        };
      case 'GetDeviceInformation':
        return {
          status: 200,
          body: envelope(
            `<tds:GetDeviceInformationResponse><tds:Manufacturer>${escapeXml(opts.manufacturer ?? 'Xiaoan')}</tds:Manufacturer><tds:Model>${escapeXml(opts.model ?? 'SIM-IPC-1')}</tds:Model>` +
              `<tds:FirmwareVersion>1.0.0</tds:FirmwareVersion><tds:SerialNumber>${escapeXml(opts.serialNumber ?? 'SIM0001')}</tds:SerialNumber><tds:HardwareId>sim</tds:HardwareId></tds:GetDeviceInformationResponse>`,
          ),
        };
      case 'GetProfiles':
        return { status: 200, body: envelope(profilesXml()) };
      case 'GetVideoSources':
        return {
          status: 200,
          body: envelope(`<trt:GetVideoSourcesResponse><trt:VideoSources token="vs0"><tt:Framerate>25</tt:Framerate><tt:Resolution><tt:Width>1920</tt:Width><tt:Height>1080</tt:Height></tt:Resolution></trt:VideoSources></trt:GetVideoSourcesResponse>`),
        };
      case 'GetStreamUri': {
        const token = leafText(xml, 'ProfileToken') ?? 'main';
        return {
          status: 200,
          body: envelope(`<trt:GetStreamUriResponse><trt:MediaUri><tt:Uri>rtsp://${host}:8554/${escapeXml(token)}</tt:Uri><tt:InvalidAfterConnect>false</tt:InvalidAfterConnect><tt:InvalidAfterReboot>false</tt:InvalidAfterReboot><tt:Timeout>PT0S</tt:Timeout></trt:MediaUri></trt:GetStreamUriResponse>`),
        };
      }
      case 'GetSnapshotUri':
        return {
          status: 200,
          body: envelope(`<trt:GetSnapshotUriResponse><trt:MediaUri><tt:Uri>${base()}/snapshot.jpg</tt:Uri><tt:InvalidAfterConnect>false</tt:InvalidAfterConnect><tt:InvalidAfterReboot>false</tt:InvalidAfterReboot><tt:Timeout>PT0S</tt:Timeout></trt:MediaUri></trt:GetSnapshotUriResponse>`),
        };
      case 'CreatePullPointSubscription': {
        const ttl = isoDuration(leafText(xml, 'InitialTerminationTime'), 60_000);
        const id = randomUUID();
        pullPoints.set(id, { id, expires: now + ttl, queue: [], waiter: null });
        return {
          status: 200,
          body: envelope(
            `<tev:CreatePullPointSubscriptionResponse><tev:SubscriptionReference><wsa:Address>${base()}/onvif/pullpoint/${id}</wsa:Address></tev:SubscriptionReference>` +
              `<wsnt:CurrentTime>${new Date(now).toISOString()}</wsnt:CurrentTime><wsnt:TerminationTime>${new Date(now + ttl).toISOString()}</wsnt:TerminationTime></tev:CreatePullPointSubscriptionResponse>`,
          ),
        };
      }
      case 'PullMessages':
      case 'Renew':
      case 'Unsubscribe': {
        const id = /\/onvif\/pullpoint\/([\w-]+)/.exec(path)?.[1];
        const pp = id ? pullPoints.get(id) : undefined;
        if (!pp || pp.expires < now) {
          if (pp) pullPoints.delete(pp.id);
          return { status: 400, body: fault('s:Sender', 'wsrf-rw:ResourceUnknownFault', 'subscription unknown or expired') };
        }
        if (op === 'Unsubscribe') {
          pullPoints.delete(pp.id);
          pp.waiter?.();
          return { status: 200, body: envelope('<wsnt:UnsubscribeResponse/>') };
        }
        if (op === 'Renew') {
          renewals++;
          pp.expires = now + isoDuration(leafText(xml, 'TerminationTime'), 60_000);
          return {
            status: 200,
            body: envelope(`<wsnt:RenewResponse><wsnt:TerminationTime>${new Date(pp.expires).toISOString()}</wsnt:TerminationTime><wsnt:CurrentTime>${new Date(now).toISOString()}</wsnt:CurrentTime></wsnt:RenewResponse>`),
          };
        }
        if (!pp.queue.length) {
          const wait = Math.min(isoDuration(leafText(xml, 'Timeout'), pullWaitMs), pullWaitMs);
          await new Promise<void>((r) => {
            const h = setTimeout(() => { timers.delete(h); pp.waiter = null; r(); }, wait);
            timers.add(h);
            pp.waiter = () => { clearTimeout(h); timers.delete(h); pp.waiter = null; r(); };
          });
        }
        const limit = Number(leafText(xml, 'MessageLimit') ?? 10) || 10;
        const msgs = pp.queue.splice(0, limit);
        const t = new Date().toISOString();
        return {
          status: 200,
          body: envelope(`<tev:PullMessagesResponse><tev:CurrentTime>${t}</tev:CurrentTime><tev:TerminationTime>${new Date(pp.expires).toISOString()}</tev:TerminationTime>${msgs.join('')}</tev:PullMessagesResponse>`),
        };
      }
      default:
        return { status: 400, body: fault('s:Receiver', 'ter:ActionNotSupported', `operation ${op} not implemented by the simulator`) };
    }
  }

  function hostileReply(res: ServerResponse, op: string): boolean {
    const h = hostile;
    if (h.mode === 'none') return false;
    if (h.operations && !h.operations.includes(op)) return false;
    switch (h.mode) {
      case 'huge': {
        // a body far past any sane SOAP answer, streamed so the server never holds it all
        res.writeHead(200, { 'content-type': 'application/soap+xml' });
        const chunk = Buffer.alloc(64 * 1024, 0x41);
        let sent = 0;
        const total = h.bytes || 64 * 1024 * 1024;
        res.write(`<?xml version="1.0"?><s:Envelope ${NS}><s:Body><x>`);
        const pump = () => {
          while (sent < total) {
            sent += chunk.length;
            if (!res.write(chunk)) return void res.once('drain', pump);
          }
          res.end('</x></s:Body></s:Envelope>');
        };
        res.on('error', () => {});
        pump();
        return true;
      }
      case 'entity-expansion': {
        const lol = '<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;"><!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;"><!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>';
        res.writeHead(200, { 'content-type': 'application/soap+xml' });
        res.end(`<?xml version="1.0"?>${lol}<s:Envelope ${NS}><s:Body><tds:GetDeviceInformationResponse><tds:Manufacturer>&lol3;</tds:Manufacturer></tds:GetDeviceInformationResponse></s:Body></s:Envelope>`);
        return true;
      }
      case 'external-entity':
        res.writeHead(200, { 'content-type': 'application/soap+xml' });
        res.end(`<?xml version="1.0"?><!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><s:Envelope ${NS}><s:Body><tds:GetDeviceInformationResponse><tds:Manufacturer>&xxe;</tds:Manufacturer></tds:GetDeviceInformationResponse></s:Body></s:Envelope>`);
        return true;
      case 'wrong-shape':
        res.writeHead(200, { 'content-type': 'application/soap+xml' });
        // well-formed SOAP, but nothing where the operation's answer should be, and keys meant to poison objects
        res.end(envelope(`<tds:${op}Response><__proto__><polluted>yes</polluted></__proto__><constructor>x</constructor><Unexpected>1</Unexpected></tds:${op}Response>`));
        return true;
      case 'garbage':
        res.writeHead(200, { 'content-type': 'text/html' });
        res.end('<html><body>502 Bad Gateway</body></html>');
        return true;
      case 'fault':
        res.writeHead(500, { 'content-type': 'application/soap+xml' });
        res.end(fault('s:Receiver', 'ter:Action', 'simulated device failure'));
        return true;
      case 'slow': {
        // answers a byte every 200 ms, forever: only a total deadline stops it
        res.writeHead(200, { 'content-type': 'application/soap+xml' });
        const h2 = setInterval(() => res.write(' '), 200);
        timers.add(h2 as unknown as NodeJS.Timeout);
        res.on('close', () => clearInterval(h2));
        return true;
      }
    }
    return false;
  }

  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    if (req.method === 'GET' && req.url === '/snapshot.jpg') {
      requests.snapshot = (requests.snapshot ?? 0) + 1;
      // snapshot URLs are plain HTTP with Digest authentication (RFC 7616), as most cameras do it
      if (!digestOk(req.headers.authorization)) {
        authFailures++;
        res.writeHead(401, { 'www-authenticate': `Digest realm="${DIGEST_REALM}", qop="auth", nonce="${digestNonce}", algorithm=MD5` });
        return void res.end();
      }
      if (hostile.mode === 'huge' && (!hostile.operations || hostile.operations.includes('snapshot'))) return void hostileReply(res, 'snapshot');
      res.writeHead(200, { 'content-type': 'image/jpeg', 'content-length': SNAPSHOT.length });
      return void res.end(SNAPSHOT);
    }
    if (req.method !== 'POST') {
      res.writeHead(405);
      return void res.end();
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > 1024 * 1024) req.destroy();
      else chunks.push(c);
    });
    req.on('end', () => {
      const xml = Buffer.concat(chunks).toString('utf8');
      const op = soapOperation(xml) ?? 'unknown';
      requests[op] = (requests[op] ?? 0) + 1;
      if (hostileReply(res, op)) return;
      if (op !== 'GetSystemDateAndTime' && !authorised(xml)) {
        authFailures++;
        res.writeHead(400, { 'content-type': 'application/soap+xml' });
        return void res.end(fault('s:Sender', 'ter:NotAuthorized', 'Sender not Authorized'));
      }
      operation(op, xml, req.url ?? '/').then(
        (r) => {
          if (r === 'wait') return;
          res.writeHead(r.status, { 'content-type': 'application/soap+xml; charset=utf-8' });
          res.end(r.body);
        },
        () => {
          res.writeHead(500);
          res.end();
        },
      );
    });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, host, () => resolve());
  });
  port = (server.address() as { port: number }).port;

  // WS-Discovery 1.0 (2005/04): answer a Probe with a ProbeMatch carrying our XAddrs, by unicast
  const udp: UdpSocket = createSocket({ type: 'udp4', reuseAddr: true });
  udp.on('message', (msg, rinfo) => {
    const text = msg.toString('utf8');
    if (!/Probe\b/.test(text) || /ProbeMatches/.test(text)) return;
    discoveryProbes++;
    const relates = leafText(text, 'MessageID') ?? '';
    const reply =
      `<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery" xmlns:dn="http://www.onvif.org/ver10/network/wsdl">` +
      `<s:Header><a:MessageID>urn:uuid:${randomUUID()}</a:MessageID><a:RelatesTo>${escapeXml(relates)}</a:RelatesTo><a:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:To><a:Action>http://schemas.xmlsoap.org/ws/2005/04/discovery/ProbeMatches</a:Action></s:Header>` +
      `<s:Body><d:ProbeMatches><d:ProbeMatch><a:EndpointReference><a:Address>urn:uuid:${uuid}</a:Address></a:EndpointReference><d:Types>dn:NetworkVideoTransmitter</d:Types>` +
      `<d:Scopes>onvif://www.onvif.org/type/video_encoder onvif://www.onvif.org/name/${encodeURIComponent(opts.model ?? 'SIM-IPC-1')} onvif://www.onvif.org/hardware/sim onvif://www.onvif.org/location/campus</d:Scopes>` +
      `<d:XAddrs>${base()}/onvif/device_service</d:XAddrs><d:MetadataVersion>1</d:MetadataVersion></d:ProbeMatch></d:ProbeMatches></s:Body></s:Envelope>`;
    udp.send(reply, rinfo.port, rinfo.address);
  });
  await new Promise<void>((resolve, reject) => {
    udp.once('error', reject);
    udp.bind(opts.discoveryPort ?? 0, host, () => resolve());
  });
  const discoveryPort = udp.address().port;

  return {
    port,
    discoveryPort,
    url: `onvif://${encodeURIComponent(username)}:${encodeURIComponent(password)}@${host}:${port}`,
    xaddr: `${base()}/onvif/device_service`,
    emit(topic, data, source = { VideoSourceConfigurationToken: 'vsc0', Rule: 'MyMotionDetectorRule' }) {
      const n = notification(topic, data, source);
      for (const pp of pullPoints.values()) {
        pp.queue.push(n);
        pp.waiter?.();
      }
    },
    hostile(mode, o = {}) {
      hostile = { mode, bytes: o.bytes ?? 0, operations: o.operations };
    },
    dropSubscriptions() {
      for (const pp of pullPoints.values()) pp.waiter?.();
      pullPoints.clear();
    },
    stats: () => ({ requests: { ...requests }, subscriptions: pullPoints.size, renewals, authFailures, discoveryProbes }),
    async close() {
      for (const t of timers) clearTimeout(t);
      for (const pp of pullPoints.values()) pp.waiter?.();
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
      await new Promise<void>((r) => udp.close(() => r()));
    },
  };
}

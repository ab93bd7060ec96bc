// Linkage (联动) on emergency alerts: release the exits of the affected building through the
// gateway command channel, and take a camera snapshot to attach to the alert. Every action is
// audited. Devices are chosen by what they declare they can do (capabilities from their profile,
// carried by the birth message), never by their model's name. There is deliberately no code path
// that locks anything: the only points ever written are a device's own `evacuation-release`
// points with their declared values (GB 50116-2013: fire linkage opens evacuation doors).
import { randomUUID } from 'node:crypto';
import { deviceCapabilitiesSchema, type Clock, type DeviceCapabilities, type Logger } from '../../contract/index.ts';
import type { Action } from '../../rules/index.ts';
import type { CommandSender } from '../types.ts';
import type { Db } from '../db.ts';
import { getById, recordStep, ts, type AlertRow } from './store.ts';

export interface LinkageOptions {
  /**
   * Capabilities of devices whose gateway sent none (an older edge): looked up by profile id in the
   * profile catalogue by the caller. Never a guess from the name.
   */
  capabilitiesOf?: (profileId: string) => DeviceCapabilities | null | undefined;
  /** takes a still image from a camera; without it snapshots are audited as unavailable */
  snapshot?: (camera: { gatewayId: string; deviceId: string }) => Promise<{ mime: string; data: Buffer } | null>;
  /** run actions for drill alerts too (default false: a drill records what it would have done) */
  duringDrills?: boolean;
  commandTimeoutMs?: number;
}

interface DeviceRow {
  device_id: string;
  profile: string;
  building: string | null;
  room: string | null;
  capabilities: DeviceCapabilities;
}

/** Stored capabilities, checked where they are read: a malformed one counts as none, never as a guess. */
function readCapabilities(v: unknown): DeviceCapabilities | null {
  if (v == null) return null;
  const ok = deviceCapabilitiesSchema.safeParse(typeof v === 'string' ? JSON.parse(v) : v);
  return ok.success ? ok.data : null;
}

export function createLinkage(opts: { db: Db; clock: Clock; log: Logger; commands?: CommandSender; linkage?: LinkageOptions }) {
  const { db, clock, log } = opts;
  const releases = (d: DeviceRow) => d.capabilities['evacuation-release'] ?? [];
  const isCamera = (d: DeviceRow) => d.capabilities.snapshot === true;

  async function audit(alert: AlertRow, action: string, device: string | null, ok: boolean, detail: string) {
    const now = clock.now();
    await db.transaction(async (tx) => {
      await tx.query(
        `insert into alert_actions (alert_id, at, action, gateway_id, device_id, ok, detail) values ($1, ${ts(2)}, $3, $4, $5, $6, $7)`,
        [alert.id, now, action, alert.gateway_id, device, ok, detail],
      );
      const row = (await getById(tx, alert.id)) ?? alert;
      await recordStep(tx, row, { action: 'action', actor: `linkage:${action}`, fromState: row.state, comment: detail, detail: { action, device, ok }, now, deliver: false });
    });
    (ok ? log.info : log.warn)('linkage', { alert: alert.id, action, device, ok, detail });
  }

  async function siteDevices(alert: AlertRow): Promise<DeviceRow[]> {
    const r = await db.query<Omit<DeviceRow, 'capabilities'> & { capabilities: unknown }>(
      `select device_id, profile, building, room, capabilities from devices where gateway_id = $1`,
      [alert.gateway_id],
    );
    return r.rows.map((d) => ({ ...d, capabilities: readCapabilities(d.capabilities) ?? opts.linkage?.capabilitiesOf?.(d.profile) ?? {} }));
  }

  async function releaseGates(alert: AlertRow, target: 'building' | 'site') {
    const devices = await siteDevices(alert);
    const origin = devices.find((d) => d.device_id === alert.device_id);
    // when the building is unknown, release every gate of the site: opening too many doors is the safe side
    const building = target === 'building' ? (origin?.building ?? null) : null;
    const list = devices.filter((d) => releases(d).length > 0 && (building === null || d.building === building));
    if (list.length === 0) return audit(alert, 'release-gates', null, true, `no device with evacuation-release ${building ? `in building ${building}` : 'at the site'} / 未找到可疏散释放的门禁`);
    if (!opts.commands) return audit(alert, 'release-gates', null, false, 'no command channel configured / 未配置下行命令通道');
    await Promise.all(list.flatMap((g) => releases(g).map((r) => releaseOne(alert, g.device_id, r.point, r.value))));
  }

  /** Write one declared release point; audited whatever the outcome. */
  async function releaseOne(alert: AlertRow, device: string, point: string, value: string | number | boolean) {
    try {
      const res = await opts.commands!.send(
        alert.gateway_id,
        { v: 1, id: randomUUID(), kind: 'device.write', device, point, value, issuedBy: `rule:${alert.rule_id}`, issuedAt: clock.now() },
        opts.linkage?.commandTimeoutMs ?? 10_000,
      );
      await audit(alert, 'release-gates', device, res.ok, res.ok ? `released ${point} / 已开启${res.message ? `: ${res.message}` : ''}` : `gateway refused ${point}: ${res.message ?? 'no reason'}`);
    } catch (e) {
      await audit(alert, 'release-gates', device, false, `command ${point} failed: ${(e as Error).message}`);
    }
  }

  async function snapshot(alert: AlertRow, target: 'nearest-camera' | 'room-cameras') {
    const all = await siteDevices(alert);
    const devices = all.filter(isCamera);
    const origin = all.find((d) => d.device_id === alert.device_id);
    const sameRoom = devices.filter((d) => origin?.room && d.room === origin.room && d.building === origin.building);
    const sameBuilding = devices.filter((d) => origin?.building && d.building === origin.building);
    const chosen = target === 'room-cameras' ? sameRoom : [(sameRoom[0] ?? sameBuilding[0] ?? devices[0])].filter(Boolean) as DeviceRow[];
    if (chosen.length === 0) return audit(alert, 'snapshot', null, true, 'no camera near the device / 附近无摄像机');
    if (!opts.linkage?.snapshot) return audit(alert, 'snapshot', chosen[0]!.device_id, false, 'snapshots are not available in this deployment / 未配置抓拍');
    for (const cam of chosen) {
      try {
        const img = await opts.linkage.snapshot({ gatewayId: alert.gateway_id, deviceId: cam.device_id });
        if (!img) {
          await audit(alert, 'snapshot', cam.device_id, false, 'camera returned no image');
          continue;
        }
        const now = clock.now();
        await db.query(`insert into alert_attachments (alert_id, kind, mime, device_id, data, created_at) values ($1, 'snapshot', $2, $3, $4, ${ts(5)})`, [alert.id, img.mime, cam.device_id, img.data, now]);
        await audit(alert, 'snapshot', cam.device_id, true, `attached ${img.mime}, ${img.data.length} bytes / 已附抓拍`);
      } catch (e) {
        await audit(alert, 'snapshot', cam.device_id, false, `snapshot failed: ${(e as Error).message}`);
      }
    }
  }

  /** Run the actions of a newly raised emergency alert. Each action is its own fault unit. */
  async function run(alert: AlertRow, actions: readonly Action[]): Promise<void> {
    if (alert.category !== 'emergency' || actions.length === 0) return;
    for (const a of actions) {
      try {
        if (alert.drill && !opts.linkage?.duringDrills) {
          await audit(alert, a.kind, null, true, `drill: not carried out (would ${a.kind} ${a.target}) / 演练：未实际执行`);
          continue;
        }
        if (a.kind === 'release-gates') await releaseGates(alert, a.target);
        else if (a.kind === 'snapshot') await snapshot(alert, a.target);
      } catch (e) {
        log.error('linkage action failed', { alert: alert.id, action: a.kind, error: e });
      }
    }
  }

  return { run };
}

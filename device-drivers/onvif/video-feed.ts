// A live video source for the simulated camera: ffmpeg's test pattern, encoded as MPEG-1 in an
// MPEG-TS stream and served over HTTP on loopback. ffmpeg's HTTP listener serves one reader and
// then ends, so the feed is respawned after each reader, the way a camera keeps its stream up.

import { spawn, type ChildProcess } from 'node:child_process';
import { freePort } from '../util/net.ts';

export interface VideoFeed {
  /** what a camera's GetStreamUri would point a client at */
  url: string;
  close(): Promise<void>;
}

export async function startTestPatternFeed(opts: { host?: string; port?: number; size?: string; fps?: 24 | 25 | 30 } = {}): Promise<VideoFeed> {
  const host = opts.host ?? '127.0.0.1';
  const port = opts.port ?? (await freePort());
  const url = `http://${host}:${port}/live.ts`;
  let child: ChildProcess | undefined;
  let stopping = false;
  // A feed that dies at once (ffmpeg missing a codec, port taken) is retried with backoff, not in a spin.
  let backoffMs = 200;
  const run = () => {
    if (stopping) return;
    const startedAt = Date.now();
    child = spawn('ffmpeg', [
      '-loglevel', 'error', '-re',
      '-f', 'lavfi', '-i', `testsrc=size=${opts.size ?? '640x360'}:rate=${opts.fps ?? 25}`,
      '-f', 'mpegts', '-codec:v', 'mpeg1video', '-b:v', '800k', '-bf', '0',
      '-listen', '1', url,
    ], { stdio: 'ignore' });
    child.on('exit', () => {
      child = undefined;
      backoffMs = Date.now() - startedAt > 2000 ? 200 : Math.min(backoffMs * 2, 30_000);
      if (!stopping) setTimeout(run, backoffMs).unref();
    });
    child.on('error', () => {
      /* no ffmpeg on this machine: the feed stays down, the rest of the demo runs */
      stopping = true;
    });
  };
  run();
  return {
    url,
    async close() {
      stopping = true;
      const c = child;
      if (c && c.exitCode === null) {
        await new Promise<void>((resolve) => {
          c.once('exit', () => resolve());
          c.kill('SIGTERM');
          setTimeout(() => { c.kill('SIGKILL'); resolve(); }, 2000).unref();
        });
      }
    },
  };
}

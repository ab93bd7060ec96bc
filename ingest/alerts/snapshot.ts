// A still image from a camera stream (rtsp://… or a file) with ffmpeg, for linkage snapshots:
//   createAlerting({ …, linkage: { snapshot: async (cam) => grabStill(await streamUrlOf(cam)) } })
import { spawn } from 'node:child_process';

export class SnapshotError extends Error {
  constructor(message: string, readonly retry: boolean) {
    super(message);
    this.name = 'SnapshotError';
  }
}

/** One JPEG frame from `input`; rejects after `timeoutMs` (default 8 s). Never logs the URL (it may hold a password). */
export function grabStill(input: string | null, opts: { ffmpegPath?: string; timeoutMs?: number; width?: number } = {}): Promise<{ mime: string; data: Buffer } | null> {
  if (!input) return Promise.resolve(null);
  const args = ['-hide_banner', '-loglevel', 'error', ...(input.startsWith('rtsp://') ? ['-rtsp_transport', 'tcp'] : []), '-i', input, '-frames:v', '1'];
  if (opts.width) args.push('-vf', `scale=${opts.width}:-2`);
  args.push('-f', 'image2', '-c:v', 'mjpeg', 'pipe:1');
  return new Promise((resolve, reject) => {
    const proc = spawn(opts.ffmpegPath ?? 'ffmpeg', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new SnapshotError(`camera did not give a frame within ${opts.timeoutMs ?? 8000} ms`, true));
    }, opts.timeoutMs ?? 8000);
    proc.stdout.on('data', (c: Buffer) => out.push(c));
    proc.stderr.on('data', (c: Buffer) => (err = (err + c.toString('utf8')).slice(-500)));
    proc.on('error', (e) => {
      clearTimeout(timer);
      reject(new SnapshotError(`ffmpeg could not start: ${e.message}`, false));
    });
    proc.on('close', (code) => {
      clearTimeout(timer);
      const data = Buffer.concat(out);
      if (code === 0 && data.length > 2 && data[0] === 0xff && data[1] === 0xd8) resolve({ mime: 'image/jpeg', data });
      else reject(new SnapshotError(`ffmpeg exited ${code}: ${err.replace(/\/\/[^@\s]*@/g, '//***@').trim() || 'no image'}`, true));
    });
  });
}

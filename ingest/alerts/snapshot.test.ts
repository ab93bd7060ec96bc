// ffmpeg (Debian's) takes the still; the source is a clip ffmpeg makes from its test pattern.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { grabStill } from './index.ts';

describe('grabStill', () => {
  const dir = mkdtempSync(join(tmpdir(), 'xiaoan-still-'));
  const clip = join(dir, 'cam.mp4');
  beforeAll(() => {
    execFileSync('ffmpeg', ['-hide_banner', '-loglevel', 'error', '-f', 'lavfi', '-i', 'testsrc=size=320x240:rate=5', '-t', '1', '-pix_fmt', 'yuv420p', clip]);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('takes one JPEG frame from a stream', async () => {
    const still = await grabStill(clip, { width: 160 });
    expect(still!.mime).toBe('image/jpeg');
    expect([still!.data[0], still!.data[1]]).toEqual([0xff, 0xd8]);
  });
  it('says what went wrong, without the password of the URL', async () => {
    await expect(grabStill(join(dir, 'missing.mp4'))).rejects.toThrow(/ffmpeg exited/);
    await expect(grabStill('rtsp://admin:secret@127.0.0.1:1/none', { timeoutMs: 3000 })).rejects.not.toThrow(/secret/);
    expect(await grabStill(null)).toBeNull();
  });
});

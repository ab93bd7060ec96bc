// Third-party peers for the driver tests: Debian's pymodbus (TCP and RTU) and a socat pty pair
// standing in for an RS-485 line. Each helper returns a stop() that ends only what it started.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';

const PEER = join(dirname(fileURLToPath(import.meta.url)), '..', 'device-drivers', 'modbus', 'testdata', 'pymodbus_peer.py');

function stopChild(p: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (p.exitCode !== null || p.signalCode !== null) return resolve();
    p.once('exit', () => resolve());
    p.kill('SIGTERM');
    setTimeout(() => p.kill('SIGKILL'), 2000).unref();
  });
}

/** pymodbus serving units (see pymodbus_peer.py for the register image). */
export async function startPymodbus(args: string[]): Promise<{ stop(): Promise<void> }> {
  const p = spawn('/usr/bin/python3', [PEER, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  p.stderr!.on('data', (d) => (stderr += d.toString()));
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`pymodbus did not start: ${stderr.slice(-500)}`)), 15_000);
    p.stdout!.on('data', (d) => {
      if (d.toString().includes('READY')) {
        clearTimeout(t);
        resolve();
      }
    });
    p.once('exit', (code) => {
      clearTimeout(t);
      reject(new Error(`pymodbus exited with ${code}: ${stderr.slice(-500)}`));
    });
  });
  // READY is printed just before serving; give the listener a moment to accept
  await new Promise((r) => setTimeout(r, 300));
  return { stop: () => stopChild(p) };
}

/** A virtual serial line: two linked pseudo-terminals. */
export async function startPtyPair(): Promise<{ a: string; b: string; stop(): Promise<void> }> {
  const tag = randomBytes(4).toString('hex');
  const a = `/tmp/xiaoan-tty-${tag}-A`;
  const b = `/tmp/xiaoan-tty-${tag}-B`;
  const p = spawn('socat', ['-d', '-d', `pty,raw,echo=0,link=${a}`, `pty,raw,echo=0,link=${b}`], { stdio: 'ignore' });
  const t0 = Date.now();
  while (!(existsSync(a) && existsSync(b))) {
    if (Date.now() - t0 > 5000 || p.exitCode !== null) throw new Error('socat did not create the pty pair');
    await new Promise((r) => setTimeout(r, 50));
  }
  return { a, b, stop: () => stopChild(p) };
}

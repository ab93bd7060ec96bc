// Small pieces of the rule language: durations ("10s", "5m") and threshold expressions
// ("${threshold} * 0.7"). Pure; no I/O.

export class RuleLanguageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RuleLanguageError';
  }
}

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** "500ms", "10s", "5m", "1h", "2d", "1m30s" → milliseconds. */
export function parseDuration(text: unknown): number {
  if (typeof text === 'number') {
    throw new RuleLanguageError(`duration ${text} has no unit; write it as e.g. "${text}s" (ms, s, m, h, d) / 时长须带单位`);
  }
  if (typeof text !== 'string') throw new RuleLanguageError('duration must be a string such as "10s" / 时长须为字符串，如 "10s"');
  const s = text.trim();
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h|d)/gy;
  let total = 0;
  let matched = 0;
  let m: RegExpExecArray | null;
  while ((m = re.exec(s))) {
    total += Number(m[1]) * UNITS[m[2]!]!;
    matched = re.lastIndex;
  }
  if (s.length === 0 || matched !== s.length) {
    throw new RuleLanguageError(`duration "${text}" is not understood; use a number and a unit: 500ms, 10s, 5m, 1h, 1d / 无法识别的时长`);
  }
  return Math.round(total);
}

export type Params = Readonly<Record<string, number>>;
/** A compiled expression: evaluates against the (scope-resolved) parameters of a rule. */
export interface Expr {
  readonly source: string;
  readonly params: readonly string[];
  eval(params: Params): number;
}

type Node =
  | { k: 'num'; v: number }
  | { k: 'param'; name: string }
  | { k: 'neg'; a: Node }
  | { k: 'bin'; op: '+' | '-' | '*' | '/'; a: Node; b: Node };

/** Recursive descent over one expression text: sum := product (+|- product)*, product := primary (*|/ primary)*. */
class ExprParser {
  private i = 0;
  readonly names = new Set<string>();
  constructor(private readonly src: string) {}

  parse(): Node {
    const tree = this.sum();
    this.ws();
    if (this.i < this.src.length) this.fail(`unexpected "${this.src[this.i]}"`);
    return tree;
  }

  private ws(): void {
    while (this.i < this.src.length && /\s/.test(this.src[this.i]!)) this.i++;
  }

  private fail(what: string): never {
    throw new RuleLanguageError(`expression "${this.src}": ${what} at position ${this.i + 1} / 表达式有误`);
  }

  private primary(): Node {
    this.ws();
    const c = this.src[this.i];
    if (c === '(') {
      this.i++;
      const n = this.sum();
      this.ws();
      if (this.src[this.i] !== ')') this.fail('expected ")"');
      this.i++;
      return n;
    }
    if (c === '-') {
      this.i++;
      return { k: 'neg', a: this.primary() };
    }
    if (c === '$') {
      const m = /^\$\{([A-Za-z_][A-Za-z0-9_]*)\}/.exec(this.src.slice(this.i));
      if (!m) this.fail('a parameter is written ${name}');
      this.i += m[0].length;
      this.names.add(m[1]!);
      return { k: 'param', name: m[1]! };
    }
    const m = /^\d+(\.\d+)?([eE][-+]?\d+)?/.exec(this.src.slice(this.i));
    if (!m) this.fail(c === undefined ? 'unexpected end' : `unexpected "${c}"`);
    this.i += m[0].length;
    return { k: 'num', v: Number(m[0]) };
  }

  private product(): Node {
    let a = this.primary();
    for (;;) {
      this.ws();
      const op = this.src[this.i];
      if (op !== '*' && op !== '/') return a;
      this.i++;
      a = { k: 'bin', op, a, b: this.primary() };
    }
  }

  private sum(): Node {
    let a = this.product();
    for (;;) {
      this.ws();
      const op = this.src[this.i];
      if (op !== '+' && op !== '-') return a;
      this.i++;
      a = { k: 'bin', op, a, b: this.product() };
    }
  }
}

/** The tree compiled into closures once: evaluation runs on every reading. */
function compileNode(n: Node): (p: Params) => number {
  switch (n.k) {
    case 'num': {
      const v = n.v;
      return () => v;
    }
    case 'param': {
      const name = n.name;
      return (p) => {
        const v = p[name];
        if (v === undefined) throw new RuleLanguageError(`parameter "${name}" has no value / 参数 ${name} 未定义`);
        return v;
      };
    }
    case 'neg': {
      const a = compileNode(n.a);
      return (p) => -a(p);
    }
    case 'bin': {
      const a = compileNode(n.a);
      const b = compileNode(n.b);
      if (n.op === '+') return (p) => a(p) + b(p);
      if (n.op === '-') return (p) => a(p) - b(p);
      if (n.op === '*') return (p) => a(p) * b(p);
      return (p) => a(p) / b(p);
    }
  }
}

/**
 * Threshold expressions: numbers, parameters written `${name}`, + - * / and parentheses.
 * Deliberately tiny: no functions, no variables besides parameters, nothing to execute.
 */
export function parseExpr(input: unknown): Expr {
  if (typeof input === 'number') {
    if (!Number.isFinite(input)) throw new RuleLanguageError(`${input} is not a finite number`);
    return { source: String(input), params: [], eval: () => input };
  }
  if (typeof input !== 'string') throw new RuleLanguageError('expected a number or an expression such as "${threshold} * 0.7" / 须为数字或表达式');
  const parser = new ExprParser(input);
  const fn = compileNode(parser.parse());
  // constant expressions fold once
  if (parser.names.size === 0) {
    const v = fn({});
    return { source: input, params: [], eval: () => v };
  }
  return { source: input, params: [...parser.names], eval: fn };
}

// ---- Asia/Shanghai wall clock (UTC+8, no daylight saving since 1991) ----
const SHANGHAI_OFFSET_MS = 8 * 3_600_000;

export interface LocalTime {
  /** YYYY-MM-DD */
  date: string;
  /** minutes since local midnight */
  minutes: number;
  /** 0 = Sunday … 6 = Saturday */
  weekday: number;
}

export function shanghaiTime(epochMs: number): LocalTime {
  const d = new Date(epochMs + SHANGHAI_OFFSET_MS);
  return {
    date: d.toISOString().slice(0, 10),
    minutes: d.getUTCHours() * 60 + d.getUTCMinutes(),
    weekday: d.getUTCDay(),
  };
}

/** "08:00" → 480 */
export function parseClock(text: string): number {
  const m = /^([01]?\d|2[0-4]):([0-5]\d)$/.exec(text.trim());
  if (!m) throw new RuleLanguageError(`time "${text}" must be HH:MM (24-hour, Asia/Shanghai) / 时间须为 HH:MM`);
  return Number(m[1]) * 60 + Number(m[2]);
}

// A small, strict argument parser: --flag, --key value, --key=value; unknown flags are errors.

export class UsageError extends Error {}

/** `--help` (or `-h`) among a command's flags: main prints the command's summary and these option lines. */
export class HelpRequest extends Error {
  constructor(readonly options: string) {
    super('help requested');
  }
}

/** One line per flag: `  --name <int>  help`. */
export function formatFlags(spec: Record<string, FlagSpec>): string {
  const rows = Object.entries(spec).map(([name, s]) => [`--${name}${s.type === 'bool' ? '' : ` <${s.type}>`}`, s.help] as const);
  const width = Math.max(0, ...rows.map(([f]) => f.length));
  return rows.map(([f, h]) => `  ${f.padEnd(width)}  ${h}`).join('\n');
}

export interface FlagSpec {
  /** 'bool' takes no value; the others take one and are type-checked. */
  type: 'bool' | 'string' | 'int' | 'number';
  help: string;
}

export type ParsedFlags = Record<string, string | number | boolean>;

export function parseFlags(argv: readonly string[], spec: Record<string, FlagSpec>): { flags: ParsedFlags; positional: string[] } {
  if (argv.includes('--help') || argv.includes('-h')) throw new HelpRequest(formatFlags(spec));
  const flags: ParsedFlags = {};
  const positional: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith('--')) {
      positional.push(arg);
      continue;
    }
    const eq = arg.indexOf('=');
    const name = arg.slice(2, eq === -1 ? undefined : eq);
    const s = spec[name];
    if (!s) throw new UsageError(`unknown flag --${name}`);
    if (s.type === 'bool') {
      if (eq !== -1) throw new UsageError(`--${name} takes no value`);
      flags[name] = true;
      continue;
    }
    const raw = eq !== -1 ? arg.slice(eq + 1) : argv[++i];
    if (raw === undefined) throw new UsageError(`--${name} needs a value`);
    if (s.type === 'string') flags[name] = raw;
    else {
      const v = Number(raw);
      if (raw.trim() === '' || !Number.isFinite(v) || (s.type === 'int' && !Number.isInteger(v))) {
        throw new UsageError(`--${name} expects ${s.type === 'int' ? 'an integer' : 'a number'}, got '${raw}'`);
      }
      flags[name] = v;
    }
  }
  return { flags, positional };
}

/** JSON lines with an `event` field: one line per lifecycle step. */

export type Logger = (event: string, fields?: Record<string, unknown>) => void;

export function jsonLogger(
  service: string,
  write: (line: string) => void = (line) => process.stdout.write(line),
): Logger {
  return (event, fields = {}) =>
    write(JSON.stringify({ time: new Date().toISOString(), service, event, ...fields }) + "\n");
}

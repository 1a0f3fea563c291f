/**
 * Quoting of names read from a file (metadata keys, tensor names) for one-line error messages:
 * control characters escaped, very long names cut.
 */
const MAX_SHOWN = 80;

export function q(name: string): string {
  const cut = name.length > MAX_SHOWN ? `${name.slice(0, MAX_SHOWN)}...(${name.length} chars)` : name;
  // eslint-disable-next-line no-control-regex
  return `'${cut.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`)}'`;
}

/**
 * Errors that tsmoe reports to users as one line (no stack trace).
 * Anything thrown as a TsmoeError is printed as `error: <message>` by the CLI and exits with code 1.
 */
export class TsmoeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TsmoeError";
  }
}

/** A GGUF file that cannot be read: truncated, corrupt, inconsistent or unsupported. */
export class GgufError extends TsmoeError {
  constructor(
    readonly file: string,
    problem: string,
  ) {
    super(`${file}: ${problem}`);
    this.name = "GgufError";
  }
}

/** A command-line value that is malformed or out of range. */
export class UsageError extends TsmoeError {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

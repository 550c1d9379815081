/**
 * Operation tracking and the drain (APP_CONTRACT.md, "draining"), framework-agnostic.
 *
 * On the first SIGTERM the lifecycle is draining at once: `draining` is true
 * (health handlers answer 503 from it), new work is refused, and work in
 * flight has drainTimeoutS to finish. What has not finished by then is given
 * to `handBack` (put it back in the queue), the closers run (the HTTP server,
 * the browser pool) and the process exits 0. A second SIGTERM ends the wait at once.
 */
import type { ContractMetrics } from "./metrics";
import type { Logger } from "./log";

export interface Operation<I = unknown> {
  readonly id: number;
  readonly kind: string;
  /** What the caller needs to hand the work back (a job id, a payload). */
  readonly info: I | undefined;
  readonly startedAt: number;
}

export interface DrainResult {
  completed: number;
  handedBack: number;
  seconds: number;
  reason: "finished" | "timeout" | "second-signal";
}

export interface LifecycleOptions {
  drainTimeoutS: number;
  metrics?: ContractMetrics;
  log?: Logger;
  /** Given the operations that did not finish in time; should put them back. */
  handBack?: (operations: Operation[]) => void | Promise<void>;
  /** How long handBack and the closers may take (default 5 s): the exit stays within the grace. */
  cleanupTimeoutS?: number;
  /** Called last with 0 (default process.exit). */
  exit?: (code: number) => void;
}

/** Thrown by begin() and track() while draining: answer 503 with Retry-After. */
export class DrainingError extends Error {
  constructor() {
    super("draining: no new work is taken");
  }
}

function within<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), ms);
  });
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer));
}

export class Lifecycle {
  private readonly active = new Map<number, Operation>();
  private readonly closers: Array<() => unknown> = [];
  private nextId = 1;
  private drainStarted: number | undefined;
  private wake: (() => void) | undefined;
  private interrupted = false;
  private drainPromise: Promise<DrainResult> | undefined;
  private completedDuringDrain = 0;

  constructor(private readonly options: LifecycleOptions) {}

  get draining(): boolean {
    return this.drainStarted !== undefined;
  }

  get inFlight(): number {
    return this.active.size;
  }

  /** Start an operation; throws DrainingError while draining. */
  begin<I>(kind = "operation", info?: I): Operation<I> {
    if (this.draining) throw new DrainingError();
    const operation: Operation<I> = { id: this.nextId++, kind, info, startedAt: Date.now() };
    this.active.set(operation.id, operation);
    this.options.metrics?.activeOperations.set(this.active.size);
    return operation;
  }

  /** End an operation (finished, or failed: either way no longer in flight). Idempotent. */
  end(operation: Operation<unknown>): void {
    if (!this.active.delete(operation.id)) return;
    this.options.metrics?.activeOperations.set(this.active.size);
    if (this.draining) this.completedDuringDrain++;
    if (this.active.size === 0) this.wake?.();
  }

  /** Track a promise (or a function returning one) as an operation until it settles. */
  track<T, I = unknown>(work: Promise<T> | (() => Promise<T>), kind = "operation", info?: I): Promise<T> {
    const operation = this.begin(kind, info);
    let promise: Promise<T>;
    try {
      promise = typeof work === "function" ? work() : work;
    } catch (error) {
      this.end(operation);
      return Promise.reject(error);
    }
    return promise.finally(() => this.end(operation));
  }

  /** Run at the end of the drain, in order (close the server, drain the pool). */
  onClose(closer: () => unknown): void {
    this.closers.push(closer);
  }

  /** SIGTERM starts the drain; a second one ends its wait at once. */
  installSignalHandlers(proc: NodeJS.Process = process): void {
    proc.on("SIGTERM", () => void this.drain("SIGTERM"));
    proc.on("SIGINT", () => void this.drain("SIGINT"));
  }

  /** Start the drain (or, when already draining, stop waiting for work in flight). */
  drain(signal = "SIGTERM"): Promise<DrainResult> {
    const log = this.options.log ?? (() => undefined);
    if (this.drainPromise) {
      if (!this.interrupted) {
        this.interrupted = true;
        log("drain_interrupted", { signal, in_flight: this.active.size });
        this.wake?.();
      }
      return this.drainPromise;
    }
    this.drainStarted = Date.now();
    this.options.metrics?.draining.set(1);
    log("drain_started", {
      signal,
      in_flight: this.active.size,
      timeout_s: this.options.drainTimeoutS,
    });
    this.drainPromise = this.runDrain(log);
    return this.drainPromise;
  }

  private async runDrain(log: Logger): Promise<DrainResult> {
    const started = this.drainStarted ?? Date.now();
    let reason: DrainResult["reason"] = "finished";
    if (this.active.size > 0) {
      let timer: NodeJS.Timeout | undefined;
      const timedOut = await new Promise<boolean>((resolve) => {
        this.wake = () => resolve(false);
        timer = setTimeout(() => resolve(true), this.options.drainTimeoutS * 1000);
      });
      clearTimeout(timer);
      this.wake = undefined;
      if (this.active.size > 0) reason = this.interrupted ? "second-signal" : timedOut ? "timeout" : "finished";
    }
    const cleanupMs = (this.options.cleanupTimeoutS ?? 5) * 1000;
    const unfinished = [...this.active.values()];
    if (unfinished.length > 0) {
      log("drain_timeout", { reason, unfinished: unfinished.length });
      try {
        await within(Promise.resolve(this.options.handBack?.(unfinished)), cleanupMs);
        log("operations_handed_back", {
          count: unfinished.length,
          ids: unfinished.map((o) => o.id),
        });
      } catch (error) {
        log("hand_back_failed", { count: unfinished.length, error: String(error) });
      }
    }
    for (const close of this.closers) {
      try {
        await within(Promise.resolve().then(close), cleanupMs);
      } catch (error) {
        log("close_failed", { error: String(error) });
      }
    }
    const seconds = (Date.now() - started) / 1000;
    this.options.metrics?.drainDuration.set(seconds);
    const result: DrainResult = {
      completed: this.completedDuringDrain,
      handedBack: unfinished.length,
      seconds,
      reason,
    };
    log("drain_finished", {
      duration_s: Number(seconds.toFixed(3)),
      completed: result.completed,
      handed_back: result.handedBack,
      reason,
    });
    (this.options.exit ?? ((code: number) => process.exit(code)))(0);
    return result;
  }
}

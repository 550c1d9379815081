/**
 * Browser-pool instrumentation through a small pool interface: any pool with
 * generic-pool's shape (acquire, release, destroy, borrowed, pending, max), such
 * as a generic-pool of Puppeteer browsers. Puppeteer itself is not needed.
 *
 * The series are the Worker Pool dashboard's (monitoring/dashboards/generate.py)
 * plus two it has no panel for yet:
 *   worker_pool_size                   gauge    the pool's capacity (max)
 *   worker_pool_busy                   gauge    browsers (contexts) in use now
 *   worker_pool_waiting                gauge    requests waiting for a browser now
 *   worker_pool_waits_total            counter  acquires that found every browser busy
 *   worker_pool_restarts_total         counter  browsers replaced after a failure
 *   worker_pool_launch_failures_total  counter  browser launches (factory.create) that failed
 */
import { Counter, Gauge, type Registry } from "prom-client";

export interface PoolLike<T> {
  acquire(): PromiseLike<T>;
  release(resource: T): unknown;
  destroy(resource: T): unknown;
  readonly borrowed: number;
  readonly pending: number;
  readonly max: number;
}

export interface FactoryLike<T> {
  create(): PromiseLike<T>;
  destroy(resource: T): PromiseLike<unknown>;
  validate?(resource: T): PromiseLike<boolean>;
}

export interface WatchOptions<T> {
  /** False when a browser must be replaced after a job (e.g. `b => b.isConnected()`). */
  healthy?: (resource: T) => boolean;
}

export interface InstrumentedPool<T> {
  /** Borrow a browser for `job`; give it back, or replace it when the job failed or it is unhealthy. */
  use<R>(job: (resource: T) => Promise<R>): Promise<R>;
}

export class PoolMetrics {
  readonly restarts: Counter;
  readonly launchFailures: Counter;
  readonly waits: Counter;
  private pool: PoolLike<unknown> | undefined;

  constructor(registry: Registry) {
    const registers = [registry];
    // Gauges read the pool at scrape time: `this` in collect() is the gauge.
    const read = (pick: (pool: PoolLike<unknown>) => number) => {
      const owner = this;
      return function (this: Gauge) {
        this.set(owner.pool ? pick(owner.pool) : 0);
      };
    };
    new Gauge({ name: "worker_pool_size", help: "Browsers the pool may hold (its max)", registers, collect: read((p) => p.max) });
    new Gauge({ name: "worker_pool_busy", help: "Browsers (contexts) in use", registers, collect: read((p) => p.borrowed) });
    new Gauge({
      name: "worker_pool_waiting",
      help: "Requests waiting for a free browser",
      registers,
      collect: read((p) => p.pending),
    });
    this.waits = new Counter({
      name: "worker_pool_waits_total",
      help: "Acquires that found every browser busy and had to wait",
      registers,
    });
    this.restarts = new Counter({
      name: "worker_pool_restarts_total",
      help: "Browsers replaced after a job failed on them or they became unhealthy",
      registers,
    });
    this.launchFailures = new Counter({
      name: "worker_pool_launch_failures_total",
      help: "Browser launches (the pool factory's create) that failed",
      registers,
    });
  }

  /** Wrap a generic-pool factory: count failed launches and browsers that fail validation. */
  factory<T>(factory: FactoryLike<T>): FactoryLike<T> {
    const wrapped: FactoryLike<T> = {
      create: async () => {
        try {
          return await factory.create();
        } catch (error) {
          this.launchFailures.inc();
          throw error;
        }
      },
      destroy: (resource) => factory.destroy(resource),
    };
    const validate = factory.validate?.bind(factory);
    if (validate) {
      wrapped.validate = async (resource) => {
        const ok = await validate(resource);
        if (!ok) this.restarts.inc();
        return ok;
      };
    }
    return wrapped;
  }

  /** Report `pool` at each scrape and return its instrumented `use`. */
  watch<T>(pool: PoolLike<T>, options: WatchOptions<T> = {}): InstrumentedPool<T> {
    this.pool = pool as PoolLike<unknown>;
    const healthy = options.healthy ?? (() => true);
    // Uses holding or waiting for a browser: at max, the next one waits.
    let claimed = 0;
    return {
      use: async <R>(job: (resource: T) => Promise<R>): Promise<R> => {
        if (Math.max(claimed, pool.borrowed) >= pool.max) this.waits.inc();
        claimed++;
        let resource: T;
        try {
          resource = await pool.acquire();
        } catch (error) {
          claimed--;
          throw error;
        }
        let failed = false;
        try {
          return await job(resource);
        } catch (error) {
          failed = true;
          throw error;
        } finally {
          if (failed || !healthy(resource)) {
            this.restarts.inc();
            await pool.destroy(resource);
          } else {
            await pool.release(resource);
          }
          claimed--;
        }
      },
    };
  }
}

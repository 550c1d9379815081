/**
 * archibald-contract: the app contract (APP_CONTRACT.md) for Node services.
 *
 *   const contract = createContract("backend", { jobKinds: ["render"], handBack });
 *   contract.express.mount(app);
 *   contract.listen(app);
 */
import { readConfig, type ContractConfig } from "./config";
import { ExpressContract, type ExpressOptions } from "./express";
import { Lifecycle, type LifecycleOptions, type Operation } from "./lifecycle";
import { jsonLogger, type Logger } from "./log";
import { ContractMetrics } from "./metrics";
import { PoolMetrics } from "./pool";

export * from "./config";
export * from "./express";
export * from "./lifecycle";
export * from "./log";
export * from "./metrics";
export * from "./pool";

export interface ContractOptions extends ExpressOptions {
  jobKinds?: string[];
  handBack?: (operations: Operation[]) => void | Promise<void>;
  env?: NodeJS.ProcessEnv;
  log?: Logger;
  exit?: LifecycleOptions["exit"];
  /** Install the SIGTERM/SIGINT handlers (default true). */
  signals?: boolean;
}

export interface ServerLike {
  close(callback?: (error?: Error) => void): unknown;
  closeIdleConnections?(): void;
  closeAllConnections?(): void;
  once(event: "listening", listener: () => void): unknown;
}

export interface ListenerLike<S extends ServerLike> {
  listen(port: number, host: string): S;
}

export interface Contract {
  config: ContractConfig;
  log: Logger;
  metrics: ContractMetrics;
  lifecycle: Lifecycle;
  pool: PoolMetrics;
  express: ExpressContract;
  /** Listen on APP_HOST:APP_PORT only; the drain closes the server last. */
  listen<S extends ServerLike>(app: ListenerLike<S>): S;
}

export function createContract(service: string, options: ContractOptions = {}): Contract {
  const config = readConfig(service, options.env);
  const log = options.log ?? jsonLogger(service);
  const metrics = new ContractMetrics({ ...config, jobKinds: options.jobKinds });
  const lifecycle = new Lifecycle({
    drainTimeoutS: config.drainTimeoutS,
    metrics,
    log,
    handBack: options.handBack,
    exit: options.exit,
  });
  if (options.signals !== false) lifecycle.installSignalHandlers();
  const pool = new PoolMetrics(metrics.registry);
  const express = new ExpressContract(config, lifecycle, metrics, options);
  return {
    config,
    log,
    metrics,
    lifecycle,
    pool,
    express,
    listen(app) {
      const server = app.listen(config.port, config.host);
      server.once("listening", () =>
        log("started", { color: config.color, version: config.version, host: config.host, port: config.port }),
      );
      lifecycle.onClose(
        () =>
          new Promise<void>((resolve) => {
            server.close(() => resolve());
            server.closeIdleConnections?.();
            // Keep-alive connections with nothing in flight would hold close() open.
            setTimeout(() => server.closeAllConnections?.(), 1000).unref();
          }),
      );
      return server;
    },
  };
}

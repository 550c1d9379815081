/**
 * The contract's series (APP_CONTRACT.md, "Metrics") in a registry of their own.
 *
 * `route` is always a route template or UNMATCHED, never a raw path: the number
 * of series stays bounded whatever clients request.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

/** The route label of every request no route matched (404s, probes, scans). */
export const UNMATCHED = "unmatched";
/** Reach past the p99 threshold the analysis and AppHighLatencyP99 use (2 s). */
export const HTTP_BUCKETS = [0.1, 0.5, 1, 2, 5, 10];
export const JOB_BUCKETS = [0.1, 0.5, 1, 2, 5, 10, 30, 60];
/** jobs_total's status label: what happened to a job. */
export const JOB_STATUSES = ["submitted", "done", "failed", "requeued"] as const;
export type JobStatus = (typeof JOB_STATUSES)[number];

export interface MetricsOptions {
  service: string;
  color: string;
  version: string;
  /** Job kinds known in advance: their jobs_total series start at 0. */
  jobKinds?: string[];
  /** process_* and nodejs_* series (default true). */
  defaultMetrics?: boolean;
}

/**
 * Turn an Express route path into the contract's template form:
 * `/api/jobs/:id` -> `/api/jobs/{id}` (as the reference app labels it).
 */
export function routeTemplate(path: unknown): string {
  if (typeof path === "string") return path.replace(/:([A-Za-z0-9_]+)\??/g, "{$1}") || "/";
  if (Array.isArray(path)) return path.map(routeTemplate).join("|");
  if (path instanceof RegExp) return String(path);
  return UNMATCHED;
}

export class ContractMetrics {
  readonly registry = new Registry();
  readonly httpRequests: Counter<"method" | "route" | "status_code">;
  readonly httpDuration: Histogram<"method" | "route" | "status_code">;
  readonly activeOperations: Gauge;
  readonly draining: Gauge;
  readonly drainDuration: Gauge;
  readonly appInfo: Gauge<"version" | "color" | "service">;
  readonly jobQueueSize: Gauge;
  readonly jobProcessing: Histogram<"kind">;
  readonly jobs: Counter<"kind" | "status">;

  constructor(options: MetricsOptions) {
    const registers = [this.registry];
    if (options.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry });
    const labelNames = ["method", "route", "status_code"] as const;
    this.httpRequests = new Counter({
      name: "http_requests_total",
      help: "HTTP requests answered, by route template",
      labelNames,
      registers,
    });
    this.httpDuration = new Histogram({
      name: "http_request_duration_seconds",
      help: "HTTP request duration in seconds, by route template",
      labelNames,
      buckets: HTTP_BUCKETS,
      registers,
    });
    this.activeOperations = new Gauge({
      name: "active_operations",
      help: "Operations in progress: requests being handled plus jobs running",
      registers,
    });
    this.draining = new Gauge({ name: "app_draining", help: "1 from the moment SIGTERM arrives", registers });
    this.drainDuration = new Gauge({
      name: "app_drain_duration_seconds",
      help: "Duration of the last drain in seconds",
      registers,
    });
    this.appInfo = new Gauge({
      name: "app_info",
      help: "Constant 1, labelled with the build",
      labelNames: ["version", "color", "service"] as const,
      registers,
    });
    this.appInfo.labels({ version: options.version, color: options.color, service: options.service }).set(1);
    this.jobQueueSize = new Gauge({
      name: "job_queue_size",
      help: "Jobs accepted and waiting to run",
      registers,
    });
    this.jobProcessing = new Histogram({
      name: "job_processing_seconds",
      help: "Time spent running a job, by kind",
      labelNames: ["kind"] as const,
      buckets: JOB_BUCKETS,
      registers,
    });
    this.jobs = new Counter({
      name: "jobs_total",
      help: "Jobs by kind and outcome (submitted, done, failed, requeued: handed back)",
      labelNames: ["kind", "status"] as const,
      registers,
    });
    for (const kind of options.jobKinds ?? []) {
      for (const status of JOB_STATUSES) this.jobs.inc({ kind, status }, 0);
    }
    // Zero before the first drain, so the panel has a series.
    this.draining.set(0);
    this.drainDuration.set(0);
    this.activeOperations.set(0);
    this.jobQueueSize.set(0);
  }

  /** One answered request; `route` must be a template or UNMATCHED. */
  observeRequest(method: string, route: string, statusCode: number, seconds: number): void {
    const labels = { method, route, status_code: String(statusCode) };
    this.httpRequests.inc(labels);
    this.httpDuration.observe(labels, seconds);
  }

  countJob(kind: string, status: JobStatus): void {
    this.jobs.inc({ kind, status });
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  render(): Promise<string> {
    return this.registry.metrics();
  }
}

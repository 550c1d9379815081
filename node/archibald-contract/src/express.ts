/**
 * The Express adapter: request metrics by route template, operation tracking
 * per request, 503 + Retry-After for new work while draining, and the
 * /health and /metrics handlers.
 *
 * /health consults the drain state on every request. (Registering a second
 * `app.get('/health')` in the SIGTERM handler never answers 503: Express runs
 * the first route registered for the path.)
 *
 * Structural types only: the package does not depend on Express.
 */
import type { ContractConfig } from "./config";
import type { Lifecycle, Operation } from "./lifecycle";
import { ContractMetrics, UNMATCHED, routeTemplate } from "./metrics";

export interface RequestLike {
  method: string;
  baseUrl?: string;
  route?: { path: unknown };
}

export interface ResponseLike {
  statusCode: number;
  once(event: "finish" | "close", listener: () => void): unknown;
  setHeader(name: string, value: string): unknown;
  status(code: number): ResponseLike;
  json(body: unknown): unknown;
  send(body: unknown): unknown;
  type(contentType: string): unknown;
}

export type Next = (error?: unknown) => void;
export type Handler = (req: RequestLike, res: ResponseLike, next: Next) => void;

export interface AppLike {
  use(handler: Handler): unknown;
  get(path: string, handler: Handler): unknown;
}

export interface ExpressOptions {
  /** Retry-After on the 503s while draining (default 5 s). */
  retryAfterS?: number;
  /** Which requests start new work, refused while draining (default: every method but GET and HEAD). */
  isNewWork?: (req: RequestLike) => boolean;
}

/** The route label of an answered request: its route template, or UNMATCHED. */
export function routeLabel(req: RequestLike): string {
  if (!req.route) return UNMATCHED;
  const template = routeTemplate(req.route.path);
  return template === UNMATCHED ? UNMATCHED : (req.baseUrl ?? "") + template;
}

export class ExpressContract {
  private readonly retryAfter: string;
  private readonly isNewWork: (req: RequestLike) => boolean;

  constructor(
    private readonly config: ContractConfig,
    private readonly lifecycle: Lifecycle,
    private readonly metrics: ContractMetrics,
    options: ExpressOptions = {},
  ) {
    this.retryAfter = String(options.retryAfterS ?? 5);
    this.isNewWork = options.isNewWork ?? ((req) => req.method !== "GET" && req.method !== "HEAD");
  }

  /** First middleware: metrics and tracking for every request, 503 for new work while draining. */
  readonly middleware: Handler = (req, res, next) => {
    const started = process.hrtime.bigint();
    let operation: Operation | undefined;
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      if (operation) this.lifecycle.end(operation);
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      this.metrics.observeRequest(req.method, routeLabel(req), res.statusCode, seconds);
    };
    res.once("finish", finish);
    res.once("close", finish);
    if (this.lifecycle.draining) {
      if (this.isNewWork(req)) {
        res.setHeader("Retry-After", this.retryAfter);
        res.status(503).json({ error: "draining", retry_after_s: Number(this.retryAfter) });
        return;
      }
    } else {
      operation = this.lifecycle.begin("request");
    }
    next();
  };

  /** GET /health: 200 ok, 503 from the moment the drain starts. */
  readonly health: Handler = (_req, res) => {
    const { color, version, service } = this.config;
    if (this.lifecycle.draining) {
      res.setHeader("Retry-After", this.retryAfter);
      res.status(503).json({ status: "draining", color, version, service });
    } else {
      res.status(200).json({ status: "ok", color, version, service });
    }
  };

  /** GET /metrics: Prometheus text. */
  readonly metricsHandler: Handler = (_req, res, next) => {
    this.metrics.render().then((text) => {
      res.type(this.metrics.contentType);
      res.status(200).send(text);
    }, next);
  };

  /** The middleware, /health and /metrics on `app`: call before any other route. */
  mount(app: AppLike): void {
    app.use(this.middleware);
    app.get("/health", this.health);
    app.get("/metrics", this.metricsHandler);
  }
}

/** The contract's environment (APP_CONTRACT.md, "environment"), validated at start-up. */

export interface ContractConfig {
  /** The service's name, the command the role gives the image (backend, frontend). */
  service: string;
  color: string;
  version: string;
  host: string;
  port: number;
  /** How long work in flight may take to finish after SIGTERM. */
  drainTimeoutS: number;
}

export class ConfigError extends Error {}

function number(env: NodeJS.ProcessEnv, name: string, fallback: number, integer: boolean): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value < 0 || (integer && !Number.isInteger(value))) {
    throw new ConfigError(
      `${name}=${JSON.stringify(raw)} is not ${integer ? "a whole number" : "a number"} >= 0`,
    );
  }
  return value;
}

/** Read APP_COLOR, APP_VERSION, APP_HOST, APP_PORT and APP_DRAIN_TIMEOUT_S; throws ConfigError. */
export function readConfig(service: string, env: NodeJS.ProcessEnv = process.env): ContractConfig {
  const port = number(env, "APP_PORT", 8000, true);
  if (port < 1 || port > 65535) throw new ConfigError(`APP_PORT=${port} is not a TCP port (1-65535)`);
  return {
    service,
    color: env.APP_COLOR || "dev",
    version: env.APP_VERSION || "dev",
    host: env.APP_HOST || "127.0.0.1",
    port,
    drainTimeoutS: number(env, "APP_DRAIN_TIMEOUT_S", 60, false),
  };
}

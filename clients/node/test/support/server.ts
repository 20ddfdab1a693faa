// Real celeritas servers for the tests: `celeritas dev` (a coordinator and a worker on every queue,
// on the embedded store) in a fresh temporary directory, on a free loopback port. Or, for what dev
// refuses (client certificates required), `celeritas coordinator` alone on the same terms.

import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, openSync, closeSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";

/** The binary under test: `CELERITAS_BIN`, else `<repo root>/target/debug/celeritas` (what `cargo test` builds). */
export function celeritasBinary(): string {
  const fromEnvironment = process.env.CELERITAS_BIN;
  if (fromEnvironment !== undefined && fromEnvironment !== "") {
    return fromEnvironment;
  }
  return join(repositoryRoot(), "target", "debug", "celeritas");
}

function repositoryRoot(): string {
  for (let directory = __dirname; ; directory = dirname(directory)) {
    if (existsSync(join(directory, "Cargo.toml")) && existsSync(join(directory, "proto"))) {
      return directory;
    }
    if (dirname(directory) === directory) {
      throw new Error(`no celeritas repository above ${__dirname}; set CELERITAS_BIN`);
    }
  }
}

/** A loopback port nothing listens on at the moment. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const address = probe.address();
      const port = typeof address === "object" && address !== null ? address.port : 0;
      probe.close(() => resolve(port));
    });
  });
}

const running = new Set<ChildProcess>();

// A test run that ends, or is interrupted, must not leave servers behind.
function killRunningServers(): void {
  for (const child of running) {
    child.kill("SIGKILL");
  }
}
process.once("exit", killRunningServers);
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    killRunningServers();
    process.kill(process.pid, signal);
  });
}

/** How to start a server. */
export interface DevServerOptions {
  /** The port to listen on; default: a free one. */
  port?: number;
  /** Extra environment, such as `CELERITAS_COORDINATOR__LEASE_TTL`. */
  env?: Record<string, string>;
  /**
   * Files written into the server's directory (its working directory) before it first starts,
   * by name: a `celeritas.toml` there is its configuration.
   */
  files?: Record<string, string | Uint8Array>;
  /** `dev` (default: a coordinator and a worker) or `coordinator` (no worker, metrics off). */
  command?: "dev" | "coordinator";
  /** Whether the configuration serves TLS, so `url` is https://; default false. */
  https?: boolean;
}

/**
 * One `celeritas dev` process. Its directory (and so its store) outlives `stop()`, so `start()`
 * again brings the same tasks back on the same port; `dispose()` stops it and removes the directory.
 */
export class DevServer {
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();

  private constructor(
    readonly directory: string,
    readonly port: number,
    private readonly env: Record<string, string>,
    private readonly command: "dev" | "coordinator",
    private readonly https: boolean,
  ) {}

  /** Starts a server and waits until it listens. */
  static async start(options: DevServerOptions = {}): Promise<DevServer> {
    const directory = mkdtempSync(join(tmpdir(), "celeritas-node-test-"));
    for (const [name, contents] of Object.entries(options.files ?? {})) {
      writeFileSync(join(directory, name), contents);
    }
    const port = options.port ?? (await freePort());
    const server = new DevServer(directory, port, options.env ?? {}, options.command ?? "dev", options.https ?? false);
    await server.start();
    return server;
  }

  /** The address clients connect to. */
  get url(): string {
    return `${this.https ? "https" : "http"}://127.0.0.1:${this.port}`;
  }

  private arguments(): string[] {
    const listen = ["--listen", `127.0.0.1:${this.port}`];
    if (this.command === "dev") {
      return ["dev", ...listen];
    }
    const store = `sqlite://${join(this.directory, "coordinator.db")}`;
    return ["coordinator", ...listen, "--database-url", store, "--metrics-listen", "none"];
  }

  /** Starts the process (again) and waits for its `listening on` line. */
  async start(): Promise<void> {
    if (this.child !== undefined) {
      throw new Error("the server is already running");
    }
    const stderr = openSync(join(this.directory, "stderr.log"), "a");
    // The store is the SQLite file in the server's own directory: a DATABASE_URL or a config file
    // from the caller's environment would share one database between servers and between runs.
    const { DATABASE_URL: _database, CELERITAS_CONFIG: _config, ...inherited } = process.env;
    const child = spawn(celeritasBinary(), this.arguments(), {
      cwd: this.directory,
      env: { ...inherited, ...this.env },
      stdio: ["ignore", "pipe", stderr],
    });
    closeSync(stderr);
    this.child = child;
    running.add(child);
    this.exited = new Promise((resolve) => child.once("exit", () => resolve()));
    void this.exited.then(() => running.delete(child));
    await this.waitUntilListening(child);
  }

  private waitUntilListening(child: ChildProcess): Promise<void> {
    const lines = createInterface({ input: child.stdout! });
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => fail(new Error("the server did not listen within 30 s")), 30_000);
      const fail = (error: Error) => {
        clearTimeout(timer);
        reject(new Error(`${error.message}\n--- server log ---\n${this.log()}`));
      };
      child.once("error", fail);
      child.once("exit", (code, signal) => fail(new Error(`the server exited (${code ?? signal}) before listening`)));
      // The first line announces the address; the rest is read and dropped so the pipe never fills.
      lines.once("line", (line) => {
        clearTimeout(timer);
        if (line === `listening on 127.0.0.1:${this.port}`) {
          resolve();
        } else {
          fail(new Error(`unexpected first line: ${line}`));
        }
      });
    });
  }

  /** The server's stderr so far. */
  log(): string {
    try {
      return readFileSync(join(this.directory, "stderr.log"), "utf8");
    } catch {
      return "";
    }
  }

  /** Stops the process with `signal` and waits for it to exit (SIGKILL after 20 s). */
  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
    const child = this.child;
    if (child === undefined) {
      return;
    }
    this.child = undefined;
    if (child.exitCode === null && child.signalCode === null) {
      child.kill(signal);
      const killer = setTimeout(() => child.kill("SIGKILL"), 20_000);
      await this.exited;
      clearTimeout(killer);
    }
  }

  /** Stops the server and removes its directory. */
  async dispose(): Promise<void> {
    await this.stop();
    rmSync(this.directory, { recursive: true, force: true });
  }
}

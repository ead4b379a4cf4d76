/**
 * A real `examples/server` process for the tests: started on 127.0.0.1
 * (port 0 unless given), its address read from its log, stopped with a
 * signal, restarted on the same address.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import path from "node:path";

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");

/** The server binary: EDK_WS_SERVER_BIN, else the debug build in CARGO_TARGET_DIR (or target/). */
export function serverBin(): string {
  if (process.env.EDK_WS_SERVER_BIN) return process.env.EDK_WS_SERVER_BIN;
  const target = process.env.CARGO_TARGET_DIR ?? path.join(repoRoot, "target");
  return path.join(target, "debug", "examples", "server");
}

/** How long a server may take to start or stop. */
const START_MS = 20_000;

const running = new Set<ChildProcess>();
process.on("exit", () => {
  for (const p of running) p.kill("SIGKILL");
});

export interface ServerOptions {
  /** Extra environment (e.g. `EDK_WS_JWT_SECRET` for production mode). */
  env?: Record<string, string>;
  /** Listen address; default `127.0.0.1:0`. */
  addr?: string;
}

export class ServerProcess {
  private stderr = "";
  private stdout = "";
  private exited: Promise<number | null>;

  private constructor(
    private readonly proc: ChildProcess,
    readonly options: ServerOptions,
    public addr = "",
  ) {
    running.add(proc);
    proc.stderr!.setEncoding("utf8").on("data", (d: string) => (this.stderr += d));
    proc.stdout!.setEncoding("utf8").on("data", (d: string) => (this.stdout += d));
    this.exited = new Promise((resolve) =>
      proc.on("exit", (code) => {
        running.delete(proc);
        resolve(code);
      }),
    );
  }

  static async start(options: ServerOptions = {}): Promise<ServerProcess> {
    const env: Record<string, string> = { ...(process.env as Record<string, string>), RUST_LOG: "info" };
    delete env.EDK_WS_JWT_SECRET;
    Object.assign(env, options.env);
    const proc = spawn(serverBin(), ["--addr", options.addr ?? "127.0.0.1:0", "--shutdown-deadline", "5s"], {
      env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    const server = new ServerProcess(proc, options);
    server.addr = await server.listening();
    return server;
  }

  /** Waits for the "listening: ws://ADDR/ws" line. */
  private listening(): Promise<string> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`server did not start in ${START_MS} ms:\n${this.stderr}`));
      }, START_MS);
      const check = () => {
        const m = /listening: ws:\/\/([0-9.]+:\d+)\/ws/.exec(this.stderr);
        if (m) {
          cleanup();
          resolve(m[1]!);
        }
      };
      const onExit = (code: number | null) => {
        cleanup();
        reject(new Error(`server exited (${code}) before listening:\n${this.stderr}`));
      };
      const cleanup = () => {
        clearTimeout(timer);
        this.proc.stderr!.off("data", check);
        this.proc.off("exit", onExit);
      };
      this.proc.stderr!.on("data", check);
      this.proc.on("exit", onExit);
      check();
    });
  }

  get url(): string {
    return `ws://${this.addr}/ws`;
  }

  get http(): string {
    return `http://${this.addr}`;
  }

  /** What the server wrote to stderr (its log) so far. */
  get log(): string {
    return this.stderr;
  }

  /** What the server wrote to stdout so far. */
  get out(): string {
    return this.stdout;
  }

  /** Waits until the log matches `re` (bounded). */
  async waitLog(re: RegExp, ms = 10_000): Promise<string> {
    const deadline = Date.now() + ms;
    for (;;) {
      const m = re.exec(this.stderr);
      if (m) return m[0];
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`log never matched ${re}:\n${this.stderr}`);
      // The next write to the log, or the deadline.
      await new Promise<void>((r) => {
        const timer = setTimeout(done, left);
        this.proc.stderr!.once("data", done);
        function done() {
          clearTimeout(timer);
          r();
        }
      });
    }
  }

  /** A development token for `user` (GET /dev/token). */
  async token(user: string): Promise<string> {
    const r = await fetch(`${this.http}/dev/token?user=${encodeURIComponent(user)}`);
    if (!r.ok) throw new Error(`/dev/token: HTTP ${r.status}`);
    return ((await r.json()) as { token: string }).token;
  }

  /** Kicks `user` (POST /dev/kick); resolves with the HTTP status. */
  async kick(user: string, reason = "kicked"): Promise<number> {
    const r = await fetch(`${this.http}/dev/kick?user=${encodeURIComponent(user)}&reason=${encodeURIComponent(reason)}`, {
      method: "POST",
    });
    return r.status;
  }

  /** Stops the process (SIGTERM: clients get 1001; SIGKILL: the sockets just drop) and waits for it. */
  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill(signal);
    const timer = setTimeout(() => this.proc.kill("SIGKILL"), START_MS);
    await this.exited;
    clearTimeout(timer);
  }

  /** A new process on the same address and environment (a new random secret in development mode). */
  async restart(signal: NodeJS.Signals = "SIGTERM"): Promise<ServerProcess> {
    await this.stop(signal);
    return ServerProcess.start({ ...this.options, addr: this.addr });
  }
}

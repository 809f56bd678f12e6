// A real presence-node process for the tests: spawned from PRESENCE_NODE_BIN (default: the
// workspace's target/debug/presence-node) on free loopback ports, its output kept for
// failure messages, killed at the end. Every wait has a deadline.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { createConnection, createServer } from "node:net";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const packageRoot = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");

export function nodeBinary(): string {
  const bin = process.env.PRESENCE_NODE_BIN ?? join(packageRoot, "..", "..", "target", "debug", "presence-node");
  if (!existsSync(bin)) {
    throw new Error(`presence-node not found at ${bin}: build it (cargo build --bin presence-node) or set PRESENCE_NODE_BIN`);
  }
  return bin;
}

/** A port nothing listens on right now (the kernel's pick, released at once). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** Polls `check` until it returns a value other than undefined/false, or fails at the deadline. */
export async function eventually<T>(
  what: string,
  check: () => T | undefined | false | Promise<T | undefined | false>,
  timeoutMs = 10_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export interface NodeOptions {
  webPort?: number;
  grpcPort?: number;
  args?: string[];
}

export class NodeProcess {
  readonly webPort: number;
  readonly grpcPort: number;
  readonly #child: ChildProcess;
  #output = "";
  #exit: Promise<number | null>;
  #exited = false;

  private constructor(child: ChildProcess, webPort: number, grpcPort: number) {
    this.#child = child;
    this.webPort = webPort;
    this.grpcPort = grpcPort;
    child.stdout?.on("data", (b: Buffer) => (this.#output += b.toString()));
    child.stderr?.on("data", (b: Buffer) => (this.#output += b.toString()));
    this.#exit = new Promise((resolve) =>
      child.on("exit", (code) => {
        this.#exited = true;
        resolve(code);
      }),
    );
  }

  /** Starts a node in insecure mode on loopback and waits until its web port accepts. */
  static async start(options: NodeOptions = {}): Promise<NodeProcess> {
    const webPort = options.webPort ?? (await freePort());
    const grpcPort = options.grpcPort ?? (await freePort());
    const args = [
      "--listen-addr",
      `127.0.0.1:${grpcPort}`,
      "--web-addr",
      `127.0.0.1:${webPort}`,
      "--auth",
      "insecure",
      ...(options.args ?? []),
    ];
    const child = spawn(nodeBinary(), args, {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "info" },
    });
    const node = new NodeProcess(child, webPort, grpcPort);
    try {
      await eventually(`the node's web port ${webPort}`, async () => !node.#exited && (await accepts(webPort)), 30_000);
    } catch (err) {
      node.kill("SIGKILL");
      throw new Error(`${String(err)}; node output:\n${node.output}`);
    }
    return node;
  }

  get url(): string {
    return `http://127.0.0.1:${this.webPort}`;
  }

  get output(): string {
    return this.#output;
  }

  get running(): boolean {
    return !this.#exited;
  }

  kill(signal: NodeJS.Signals = "SIGKILL"): void {
    if (!this.#exited) this.#child.kill(signal);
  }

  /** Waits for the process to end; fails at the deadline. */
  async exited(timeoutMs = 15_000): Promise<number | null> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`node still running after ${timeoutMs} ms:\n${this.#output}`)), timeoutMs);
    });
    try {
      return await Promise.race([this.#exit, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Kills the process (if still running) and waits for it to go. */
  async stop(): Promise<void> {
    this.kill("SIGKILL");
    await this.exited(10_000);
  }
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: "127.0.0.1", port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1000, () => done(false));
    socket.once("connect", () => done(true));
    socket.once("error", () => done(false));
  });
}

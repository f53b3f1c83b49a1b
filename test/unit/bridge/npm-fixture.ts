/** Fake @node-llama-cpp tarballs and a loopback npm registry serving them, for the llama-fetch tests. */
import { createHash } from "node:crypto";

const enc = new TextEncoder();

export interface TarEntry {
  path: string;
  data?: string | Uint8Array;
  /** "0" file (default), "5" directory, "2" symlink. */
  type?: string;
  mode?: number;
}

function put(h: Uint8Array, off: number, len: number, s: string): void {
  h.set(enc.encode(s).subarray(0, len), off);
}

function octal(n: number, len: number): string {
  return `${n.toString(8).padStart(len - 1, "0")}\0`;
}

function header(name: string, size: number, type: string, mode: number, prefix = ""): Uint8Array {
  const h = new Uint8Array(512);
  put(h, 0, 100, name);
  put(h, 100, 8, octal(mode, 8));
  put(h, 108, 8, octal(0, 8));
  put(h, 116, 8, octal(0, 8));
  put(h, 124, 12, octal(size, 12));
  put(h, 136, 12, octal(0, 12));
  h[156] = type.charCodeAt(0);
  put(h, 257, 8, "ustar\u000000");
  put(h, 345, 155, prefix);
  put(h, 148, 8, "        ");
  const sum = h.reduce((a, b) => a + b, 0);
  put(h, 148, 8, `${sum.toString(8).padStart(6, "0")}\0 `);
  return h;
}

function padded(data: Uint8Array): Uint8Array[] {
  const pad = (512 - (data.length % 512)) % 512;
  return [data, new Uint8Array(pad)];
}

function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  let len = body.length;
  while (`${len}${body}`.length !== len) len = `${len}${body}`.length;
  return `${len}${body}`;
}

/** An uncompressed ustar archive; paths over 100 bytes get a pax header. */
export function makeTar(entries: TarEntry[]): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const e of entries) {
    const data = typeof e.data === "string" ? enc.encode(e.data) : (e.data ?? new Uint8Array());
    if (enc.encode(e.path).length > 100) {
      const pax = enc.encode(paxRecord("path", e.path));
      parts.push(header("PaxHeader", pax.length, "x", 0o644), ...padded(pax));
    }
    parts.push(header(e.path.slice(0, 100), data.length, e.type ?? "0", e.mode ?? 0o644), ...padded(data));
  }
  parts.push(new Uint8Array(1024));
  return Buffer.concat(parts);
}

/** A gzipped npm package for `platform`: libllama and friends under bins/<platform>/, plus files that must not be extracted. */
export function fakePackage(platform: string, extra: TarEntry[] = [], withLib = true): Uint8Array<ArrayBuffer> {
  const bins = `package/bins/${platform}`;
  const entries: TarEntry[] = [
    { path: "package/package.json", data: `{"name":"@node-llama-cpp/${platform}"}` },
    { path: "package/dist/index.js", data: "export {};" },
    { path: `${bins}/_nlcBuildMetadata.json`, data: "{}" },
    { path: `${bins}/libggml-base.so`, data: "ggml" },
    ...(withLib ? [{ path: `${bins}/libllama.v0.4.0.so`, data: "LLAMA", mode: 0o755 }] : []),
    ...extra,
  ];
  return Bun.gzipSync(makeTar(entries) as Uint8Array<ArrayBuffer>);
}

/** npm's `sha512-<base64>` integrity of `bytes`. */
export function sri(bytes: Uint8Array): string {
  return `sha512-${createHash("sha512").update(bytes).digest("base64")}`;
}

export interface FakeRegistry {
  url: string;
  /** Request paths, in order. */
  requests: string[];
  stop(): void;
}

/** A loopback registry answering GET /@node-llama-cpp/<p>/-/<p>-<v>.tgz from `tarballs` (keyed by that path). */
export function fakeRegistry(tarballs: Record<string, Uint8Array<ArrayBuffer>>, opts: { stall?: boolean } = {}): FakeRegistry {
  const requests: string[] = [];
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    fetch(req) {
      const path = new URL(req.url).pathname;
      requests.push(path);
      const body = tarballs[path];
      if (!body) return new Response("not found", { status: 404 });
      if (opts.stall) {
        // Headers, then silence: the client's stall timer must fire.
        const stream = new ReadableStream({ start: (c) => c.enqueue(body.subarray(0, 10)) });
        return new Response(stream, { headers: { "content-length": String(body.length) } });
      }
      return new Response(body, { headers: { "content-type": "application/octet-stream" } });
    },
  });
  return { url: `http://127.0.0.1:${server.port}`, requests, stop: () => server.stop(true) };
}

/** The registry path of a package's tarball. */
export function tarballPath(platform: string, version: string): string {
  return `/@node-llama-cpp/${platform}/-/${platform}-${version}.tgz`;
}

/**
 * A small reader for the tar archives npm publishes (ustar, with pax or GNU long names):
 * enough to unpack an already verified @node-llama-cpp tarball without the system tar.
 */

const BLOCK = 512;
const decoder = new TextDecoder();

/** One regular file of a tar archive; `data` is a view into the archive. */
export interface TarFile {
  path: string;
  mode: number;
  data: Uint8Array;
}

function text(b: Uint8Array, off: number, len: number): string {
  const field = b.subarray(off, off + len);
  const end = field.indexOf(0);
  return decoder.decode(end < 0 ? field : field.subarray(0, end));
}

// Octal, or (GNU) base-256 when the high bit of the first byte is set.
function number(b: Uint8Array, off: number, len: number): number {
  if ((b[off] as number) & 0x80) {
    let n = (b[off] as number) & 0x7f;
    for (let i = off + 1; i < off + len; i++) n = n * 256 + (b[i] as number);
    return n;
  }
  const s = text(b, off, len).trim();
  return s ? parseInt(s, 8) : 0;
}

function checksumOk(h: Uint8Array): boolean {
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 32 : (h[i] as number);
  return sum === number(h, 148, 8);
}

// pax records are "LEN key=value\n"; only `path` matters here.
function paxPath(data: Uint8Array): string | undefined {
  let path: string | undefined;
  for (let i = 0; i < data.length; ) {
    const space = data.indexOf(0x20, i);
    const len = space < 0 ? NaN : parseInt(decoder.decode(data.subarray(i, space)), 10);
    if (!(len > 0)) break;
    const record = decoder.decode(data.subarray(space + 1, i + len)).replace(/\n$/, "");
    if (record.startsWith("path=")) path = record.slice(5);
    i += len;
  }
  return path;
}

/** The regular files of an (uncompressed) tar archive, in order; throws on a corrupt or truncated one. */
export function readTar(tar: Uint8Array): TarFile[] {
  const files: TarFile[] = [];
  let longName: string | undefined;
  for (let off = 0; off + BLOCK <= tar.length; ) {
    const h = tar.subarray(off, off + BLOCK);
    if (h.every((b) => b === 0)) break;
    if (!checksumOk(h)) throw new Error(`tar: bad header checksum at byte ${off}`);
    const size = number(h, 124, 12);
    const start = off + BLOCK;
    if (start + size > tar.length) throw new Error(`tar: truncated entry at byte ${off}`);
    const data = tar.subarray(start, start + size);
    off = start + Math.ceil(size / BLOCK) * BLOCK;
    const type = String.fromCharCode(h[156] as number);
    if (type === "x") longName = paxPath(data) ?? longName;
    else if (type === "L") longName = text(data, 0, data.length);
    if (type === "x" || type === "L" || type === "g") continue;
    // POSIX ustar ("ustar\0") has a name prefix; old GNU tar ("ustar ") keeps times there.
    const prefix = text(h, 257, 6) === "ustar" ? text(h, 345, 155) : "";
    const path = longName ?? (prefix ? `${prefix}/${text(h, 0, 100)}` : text(h, 0, 100));
    longName = undefined;
    // Directories, links and devices are skipped: only file contents are wanted.
    if (type === "0" || type === "\0" || type === "7") files.push({ path, mode: number(h, 100, 8), data });
  }
  return files;
}

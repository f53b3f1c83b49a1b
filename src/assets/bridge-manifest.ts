/**
 * The bridge files embedded in a compiled binary: path relative to python_bridge/ ->
 * embedded file path. `null` when running from source. scripts/build.ts replaces this
 * module at compile time with one that imports each file `with { type: "file" }`.
 */
export const EMBEDDED_BRIDGE: Readonly<Record<string, string>> | null = null;

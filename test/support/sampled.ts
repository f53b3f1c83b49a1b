/** SDK 1.10.0's types no longer list temperature/top_p/top_k; the SDK still sends them and the API takes them. */
export function sampled<T extends object>(params: T & { temperature?: number; top_p?: number; top_k?: number }): T {
  return params;
}

/** The MLX bridge: the Python worker behind the InferenceEngine interface. */
export { MlxEngine, type MlxEngineOptions } from "./mlx-engine";
export type { WorkerCapabilities } from "./worker-info";
export { type BridgeLogger, PROTOCOL_VERSION } from "./protocol";
export { LineDecoder, type LineDecoderOptions, LineTooLongError } from "./line-decoder";
export { StderrTail, type StderrTailOptions } from "./stderr-tail";
export { WorkerProcess, type WorkerProcessOptions } from "./worker-process";

/** Typed engine failures; the HTTP layer maps each to an Anthropic error. */
export class EngineError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/**
 * The rendered prompt cannot fit the model's context. The message is neutral (numbers only);
 * the API layer words it for its clients. A backend that refuses without saying how many
 * tokens the prompt has (an upstream's own wording) leaves the numbers unset and gives `detail`.
 */
export class PromptTooLongError extends EngineError {
  constructor(
    readonly promptTokens?: number,
    readonly maxTokens?: number,
    readonly detail?: string,
  ) {
    super(
      promptTokens !== undefined && maxTokens !== undefined
        ? `prompt has ${promptTokens} tokens; the context holds ${maxTokens}`
        : `prompt does not fit the context${detail ? `: ${detail}` : ""}`,
    );
  }
}

/** The request is well-formed JSON but the engine cannot serve it. */
export class EngineBadRequestError extends EngineError {}

/**
 * The worker died or broke protocol. The message is a short cause fit for clients; the
 * worker's last stderr lines (paths, maybe prompt fragments) stay in `stderrTail` for the server log.
 */
export class WorkerCrashedError extends EngineError {
  constructor(
    message: string,
    readonly stderrTail: string[] = [],
  ) {
    super(message);
  }
}

/** Too much queued work; retry later. */
export class EngineOverloadedError extends EngineError {
  constructor(
    message: string,
    readonly retryAfterSeconds: number,
  ) {
    super(message);
  }
}

/** The worker did not answer in time. */
export class EngineTimeoutError extends EngineError {}

/** The backend cannot be reached (an upstream down, a worker that cannot start): 503. */
export class EngineUnavailableError extends EngineError {}

/** The backend answered with a server error of its own: 502. */
export class EngineUpstreamFailureError extends EngineError {}

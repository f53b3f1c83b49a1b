/** Request headers Anthropic clients send; CORS preflights that list none are answered with these. */
export const ANTHROPIC_REQUEST_HEADERS = "content-type, x-api-key, authorization, anthropic-version, anthropic-beta";

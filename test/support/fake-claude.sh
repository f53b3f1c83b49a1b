#!/usr/bin/env bash
# A fake `claude` for wrapper tests. Tests put it first on PATH under the name `claude`.
# It records what it was given and exits with the code the test chose. It uses bash builtins
# (plus `sleep` when asked to wait), so it works on a PATH stripped down to a few tools.
#
#   FAKE_CLAUDE_RECORD   path prefix (required): writes PREFIX.argv and PREFIX.env, each a list of
#                        NUL-terminated entries (argv in order; env as NAME=VALUE)
#   FAKE_CLAUDE_STDOUT   printed on stdout, followed by a newline (default: nothing)
#   FAKE_CLAUDE_WAIT_FOR wait until this path exists (up to ~20 s, else exit 98): a rendezvous
#                        that proves another process ran at the same time
#   FAKE_CLAUDE_EXIT     exit code (default 0)
set -u
rec="${FAKE_CLAUDE_RECORD:?fake claude: FAKE_CLAUDE_RECORD is not set}"

printf '%s\0' "$@" > "$rec.argv"
{
  for name in $(compgen -e); do
    printf '%s=%s\0' "$name" "${!name}"
  done
} > "$rec.env"

if [[ -n "${FAKE_CLAUDE_STDOUT:-}" ]]; then
  printf '%s\n' "$FAKE_CLAUDE_STDOUT"
fi

if [[ -n "${FAKE_CLAUDE_WAIT_FOR:-}" ]]; then
  for ((i = 0; i < 400; i++)); do
    [[ -e "$FAKE_CLAUDE_WAIT_FOR" ]] && break
    sleep 0.05
  done
  if [[ ! -e "$FAKE_CLAUDE_WAIT_FOR" ]]; then
    printf 'fake claude: %s never appeared\n' "$FAKE_CLAUDE_WAIT_FOR" >&2
    exit 98
  fi
fi

exit "${FAKE_CLAUDE_EXIT:-0}"

"""One root for facewatch's expected failures, so each edge maps them in one place.

An expected failure is one a person can act on: bad input, a refused act, a missing file,
a configuration that does not hold. Each kind subclasses ``FacewatchError`` (and, where it
always was one, ``ValueError`` or ``RuntimeError``, so existing ``except`` clauses still
match) and says how it leaves:

- ``exit_code``: the CLI's exit status (2 usage or configuration, the default; 1 for a
  failure of the machinery, such as a model pool that cannot start). The CLI's root
  command prints the message and exits with it (jobs/cli/common.py).
- ``http_status``: the API's status (422 by default). The API has one exception handler
  for it (serve/http.py); the live hub turns one into a ``HubError`` so that it crosses
  Ray by its arguments alone.
- ``details``: a longer report (a traceback from another process) that ``-v`` logs; the
  message stays one line.

Anything else is unexpected: a traceback and exit 1 in the CLI, a 500 from the API.
"""

from __future__ import annotations

EXIT_UNEXPECTED = 1
EXIT_USAGE = 2


class FacewatchError(Exception):
    """An expected failure, with its exit code and HTTP status (class defaults)."""

    exit_code: int = EXIT_USAGE
    http_status: int = 422
    details: str = ""

    def public_message(self) -> str:
        """The message for an API client: the message itself, unless the kind of error is
        the server's own (its class status is 5xx: store, weights, configuration), whose
        message may name the server's files; then only that its log says why. An error
        raised with a 5xx status on purpose (a camera stopped: 503) keeps its message; a
        subclass with a message fit for clients says so by overriding this."""
        if type(self).http_status >= 500:
            return "the server cannot do this now; its log says why"
        return str(self)

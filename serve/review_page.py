"""The officers' review page: one static HTML file, served with a fresh CSP nonce.

The page holds no data when served; its script fetches pending alerts and listens to the
alert stream with the same credentials the page was loaded with. All text from alerts is
inserted with ``textContent``, never as HTML, and the CSP allows only the nonced script.
"""

from __future__ import annotations

import html
import secrets
from functools import lru_cache
from importlib import resources

from fastapi.responses import HTMLResponse


@lru_cache(maxsize=1)
def _template() -> str:
    return resources.files("serve").joinpath("review.html").read_text(encoding="utf-8")


def review_page(officer: str, can_decide: bool) -> HTMLResponse:
    nonce = secrets.token_urlsafe(16)
    body = (
        _template()
        .replace("{{nonce}}", nonce)
        .replace("{{officer}}", html.escape(officer))
        .replace("{{can_decide}}", "true" if can_decide else "false")
    )
    csp = (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
        "img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )
    return HTMLResponse(body, headers={"Content-Security-Policy": csp})

"""The workspace's app in process for tests: real tokens, a real home, ``LiveHub``'s own
``case_act``; optionally served by uvicorn on 127.0.0.1 for a real browser."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from types import SimpleNamespace

import uvicorn

from pipelines.config import Settings
from pipelines.engine import FaceEngine
from pipelines.home import Home
from pipelines.workspace import Workspace
from serve.api import create_app
from serve.auth import FailureThrottle, TokenTable, hash_token
from serve.hub import LiveHub
from serve.local import free_port

TOKENS = {
    "ana": ("investigator", "ana-investigator-token-0123"),
    "ben": ("investigator", "ben-investigator-token-0123"),
    "aud": ("auditor", "auditor-token-0123456789ab"),
    "root": ("admin", "admin-token-0123456789abcdef"),
    "ops": ("operator", "operator-token-0123456789ab"),
}
_HUB = LiveHub.func_or_class


class FakePoolInProcess:
    """Fake pool: the FacePool's ``photos`` (the probe check) on a real FaceEngine in this
    process, loaded on first use; the Serve deployment would need a Ray cluster, and the
    workspace asks the pool for nothing else."""

    def __init__(self, settings: Settings):
        self.engine = FaceEngine(settings)
        self.photos = SimpleNamespace(remote=self._photos)

    async def _photos(self, images):
        engine = await asyncio.to_thread(self.engine.load, False)
        return await asyncio.to_thread(engine.probe_images, list(images))


class WorkspaceHubShell:
    """Fake hub: LiveHub's own ``case_act`` and ``auth_failure`` on the parts they use, all
    real (Home, Workspace, AuditLog, FailureThrottle); blocking calls run inline. The live
    hub's cameras are not needed by the workspace, so none is started; of its model pool,
    the probe check runs in process (``FakePoolInProcess``)."""

    case_act, auth_failure = _HUB.case_act, _HUB.auth_failure
    _probe_problem = _HUB._probe_problem

    def __init__(self, home: Home):
        self.home, self.audit = home, home.audit
        self.workspace = Workspace(home)
        self._auth_failures = FailureThrottle()
        self.pool = FakePoolInProcess(home.settings)

    async def _io(self, fn, *args, **kwargs):
        return fn(*args, **kwargs)


class ShellClient:
    """The API's HubClient over the shell (in process, as the real one is over Ray)."""

    def __init__(self, shell):
        self.shell = shell
        self.pending: list[asyncio.Future] = []

    async def call(self, method, *args):
        return await getattr(self.shell, method)(*args)

    def notify(self, method, *args) -> None:
        self.pending.append(asyncio.ensure_future(getattr(self.shell, method)(*args)))


def workspace_app(home: Home):
    tokens = TokenTable([(n, r, hash_token(t)) for n, (r, t) in TOKENS.items()])
    return create_app(Settings(home=home.path), tokens, ShellClient(WorkspaceHubShell(home)))


def as_(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name][1]}"}


@contextlib.contextmanager
def served(home: Home):
    """The workspace app on 127.0.0.1 (uvicorn in a thread); yields its base URL."""
    port = free_port()
    config = uvicorn.Config(workspace_app(home), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the workspace app did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)

"""``start_ray``'s one retry of a local Ray that did not come up. Ray's failure (its raylet
never registering) cannot be caused on purpose, so ``ray.init`` here is a fake, named as
such: these tests check only what start_ray does with that failure."""

from __future__ import annotations

import pytest

from jobs import runtime

pytestmark = pytest.mark.timeout(30)

RAY_TIMEOUT = Exception(
    "The current node timed out during startup. This could happen because some of the "
    "raylet failed to startup or the GCS has become overloaded."
)


class FakeRayInit:
    """Stands in for ray.init: raises the given errors in turn, then succeeds."""

    def __init__(self, *errors: Exception):
        self.errors = list(errors)
        self.calls: list[dict] = []
        self.shutdowns = 0

    def init(self, **kwargs):
        self.calls.append(kwargs)
        if self.errors:
            raise self.errors.pop(0)

    def shutdown(self):
        self.shutdowns += 1


@pytest.fixture
def fake(monkeypatch):
    import ray

    def install(*errors: Exception) -> FakeRayInit:
        f = FakeRayInit(*errors)
        monkeypatch.setattr(ray, "is_initialized", lambda: False)
        monkeypatch.setattr(ray, "init", f.init)
        monkeypatch.setattr(ray, "shutdown", f.shutdown)
        return f

    return install


def test_a_local_ray_that_timed_out_is_started_once_more(fake):
    f = fake(RAY_TIMEOUT)
    assert runtime.start_ray(None) is True
    assert len(f.calls) == 2 and f.shutdowns == 1
    assert f.calls[1]["_node_ip_address"] == "127.0.0.1"  # the same loopback start


def test_it_gives_up_after_the_second_timeout(fake):
    f = fake(RAY_TIMEOUT, RAY_TIMEOUT)
    with pytest.raises(Exception, match="timed out during startup"):
        runtime.start_ray(None)
    assert len(f.calls) == runtime.LOCAL_START_ATTEMPTS


def test_other_errors_and_remote_clusters_are_not_retried(fake):
    f = fake(ValueError("bad argument"))
    with pytest.raises(ValueError, match="bad argument"):
        runtime.start_ray(None)
    assert len(f.calls) == 1
    f = fake(RAY_TIMEOUT)
    with pytest.raises(Exception, match="timed out"):
        runtime.start_ray("ray://cluster.example:10001")
    assert len(f.calls) == 1


def test_the_cli_maps_pool_errors_to_exit_codes():
    """A pool that embeds with another embedder than the store's is a configuration error
    (exit 2); one whose replicas cannot start is exit 1, with their own reason."""
    import typer

    from pipelines.schemas import EmbedderInfo, EmbedderMismatchError

    store = EmbedderInfo("dlib-resnet", "1", 128)
    with pytest.raises(EmbedderMismatchError, match="facenet"):
        runtime._check_embedder("facenet-vggface2@1/512", store)
    runtime._check_embedder(store.key, store)  # the same space: no error
    for exc, code in (
        (EmbedderMismatchError("the FacePool embeds with facenet-vggface2@1/512"), 2),
        (runtime.PoolStartError("the face pool failed to start: RuntimeError: x"), 1),
    ):
        with pytest.raises(typer.Exit) as stopped, runtime.pool_errors_fail():
            raise exc
        assert stopped.value.exit_code == code

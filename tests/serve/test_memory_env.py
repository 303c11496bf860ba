"""serve.memory_env: the allocator settings facewatch starts Ray with (issue 16, soak RSS).
Their effect on a replica's memory is checked by tests/test_soak.py (glibc's free memory in
each FacePool replica); here, that they are set and that a user's own value wins."""

from __future__ import annotations

import pytest

from serve.memory_env import MEMORY_ENV, apply_memory_env


@pytest.mark.timeout(10)
def test_unset_settings_are_filled_in():
    env: dict[str, str] = {"PATH": "/usr/bin"}
    assert apply_memory_env(env) == MEMORY_ENV
    assert env == {"PATH": "/usr/bin", **MEMORY_ENV}
    # no fixed mmap threshold: it doubled the pool's model time (serve/memory_env.py)
    assert MEMORY_ENV == {"MALLOC_ARENA_MAX": "2", "ONEDNN_PRIMITIVE_CACHE_CAPACITY": "64"}


@pytest.mark.timeout(10)
def test_a_users_own_value_wins():
    env = {"MALLOC_ARENA_MAX": "4"}
    assert apply_memory_env(env)["MALLOC_ARENA_MAX"] == "4"
    assert env == {**MEMORY_ENV, "MALLOC_ARENA_MAX": "4"}

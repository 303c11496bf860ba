"""Keep each Serve replica's own gRPC server on the node's loopback address.

Ray Serve (2.60) starts a gRPC server in every replica for calls between deployments and
binds it to ``[::]:0``, all interfaces, whatever the node address is
(``ray/serve/_private/replica.py``, ``_on_initialized``). On a node that runs on
127.0.0.1 (``facewatch serve`` and ``facewatch search`` on one machine) nothing outside
the machine should reach it, so each facewatch deployment calls ``bind_replica_to_node``
in its constructor, which runs before that server starts: the bind address becomes the
node's own address. On a cluster node with a real address it is left as Ray chose, so the
other nodes can still call in. Tested in ``tests/jobs/test_runtime.py``.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

ALL_INTERFACES = "[::]:"


def bind_replica_to_node() -> None:
    """Make this replica's inter-deployment gRPC server listen on 127.0.0.1 when the node
    is 127.0.0.1. Harmless if Ray's internals changed: then it logs and does nothing."""
    import ray

    if ray.util.get_node_ip_address() != "127.0.0.1":
        return
    try:
        from ray.serve._private import replica
    except ImportError:  # pragma: no cover - a Ray without that module
        logger.warning("cannot keep the replica's gRPC server on loopback (Ray changed)")
        return
    bind = replica.add_port_to_grpc_server
    if getattr(bind, "facewatch_loopback", False):
        return

    def on_loopback(server, address: str):
        if address.startswith(ALL_INTERFACES):
            address = "127.0.0.1:" + address[len(ALL_INTERFACES) :]
        return bind(server, address)

    on_loopback.facewatch_loopback = True  # type: ignore[attr-defined]
    replica.add_port_to_grpc_server = on_loopback

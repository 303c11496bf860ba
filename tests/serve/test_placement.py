"""Placement checks (serve/placement.py) on the node lists Ray reports: a part no node can
host is a clear error before anything waits on it; milvus-lite is refused on a cluster
unless every writer is pinned to the home node. On a real cluster: tests/cluster/."""

from __future__ import annotations

import pytest

from pipelines.config import Settings
from serve.placement import (
    PlacementError,
    StoreOnClusterError,
    actor_wants,
    check_device,
    check_placement,
    check_store_for_cluster,
    local_resources,
)


def node(**resources) -> dict:
    return {"Alive": True, "Resources": {"CPU": 1.0, **resources}}


HOME = node(facewatch_home=100.0)
POOL = node(facewatch_pool=100.0)


def test_a_part_is_placed_when_one_node_offers_all_it_asks():
    check_placement({"FacePool": {"CPU": 0.9, "facewatch_pool": 0.01}}, [HOME, POOL])


def test_a_resource_no_node_offers_is_a_clear_error_naming_the_part():
    with pytest.raises(PlacementError) as err:
        check_placement({"FacePool": {"facewatch_gpu_pool": 0.01}}, [HOME, POOL])
    msg = str(err.value)
    assert "FacePool asks for {facewatch_gpu_pool: 0.01}" in msg
    assert "facewatch_pool: 100" in msg and "ray start --resources" in msg


def test_resources_split_over_two_nodes_do_not_place_one_actor():
    with pytest.raises(PlacementError):
        check_placement({"x": {"facewatch_home": 0.01, "facewatch_pool": 0.01}}, [HOME, POOL])


def test_too_many_cpus_for_any_one_node_is_refused():
    with pytest.raises(PlacementError, match="CPU: 2"):
        check_placement({"FacePool": actor_wants({"num_cpus": 2})}, [HOME, POOL])


def test_device_cuda_needs_a_live_node_with_a_gpu():
    check_device("cuda", [HOME, node(GPU=1.0)])
    for device in ("auto", "cpu"):
        check_device(device, [HOME, POOL])  # the pool runs on what there is
    dead_gpu = {"Alive": False, "Resources": {"GPU": 1.0}}
    with pytest.raises(PlacementError, match="device 'cuda' was asked for") as err:
        check_device("cuda", [HOME, POOL, dead_gpu])
    assert "no node of the cluster offers a GPU" in str(err.value)


def test_actor_wants_reads_ray_style_options():
    wants = actor_wants({"num_cpus": 0.5, "num_gpus": 0.25, "resources": {"a": 1}})
    assert wants == {"CPU": 0.5, "GPU": 0.25, "a": 1.0}


def test_the_local_node_offers_every_resource_the_config_names():
    overrides = {"FacePool": {"ray_actor_options": {"resources": {"gpu_pool": 0.5}}}}
    got = local_resources(Settings(), overrides)
    assert set(got) == {"facewatch_home", "facewatch_pool", "gpu_pool"}


def test_milvus_lite_on_one_node_is_fine():
    assert "one node" in check_store_for_cluster(Settings(), {}, [HOME])


def test_milvus_lite_on_a_cluster_is_refused_clearly():
    with pytest.raises(StoreOnClusterError, match="Milvus server"):
        check_store_for_cluster(Settings(), {"facewatch_home": 0.01}, [HOME, POOL, POOL])


def test_milvus_lite_on_a_cluster_with_writers_pinned_home_says_so():
    s = Settings(placement={"lite_writers_on_home": True})
    line = check_store_for_cluster(s, {"facewatch_home": 0.01}, [HOME, POOL])
    assert "pinned to the home node" in line
    with pytest.raises(StoreOnClusterError):  # a writer not on the home is still refused
        check_store_for_cluster(s, {"facewatch_pool": 0.01}, [HOME, POOL])


def test_a_milvus_server_is_fine_on_a_cluster():
    s = Settings(store={"uri": "http://127.0.0.1:19530"})
    assert "Milvus server" in check_store_for_cluster(s, {}, [HOME, POOL, POOL])


def test_conf_serve_yaml_alone_keeps_the_stateful_parts_light_and_on_the_home_node():
    """`serve deploy` replaces a deployment's ray_actor_options with the file's: without a
    CPU share there, LiveHub and Api each took a whole CPU and the second never started
    on a one-CPU home node."""
    from jobs.cluster import ROOT
    from serve.local import read_serve_file

    overrides = read_serve_file(ROOT / "conf" / "serve.yaml").overrides
    for name in ("LiveHub", "Api"):
        opts = overrides[name]["ray_actor_options"]
        assert opts["num_cpus"] <= 0.1 and "facewatch_home" in opts["resources"]
    assert "facewatch_pool" in overrides["FacePool"]["ray_actor_options"]["resources"]


def test_the_app_built_without_serve_yaml_pins_the_hub_and_api_to_placement_home():
    """What `serve deploy`'s build sees (the file's options come later): the store check
    must see LiveHub, the store's writer, on the home node."""
    from serve.app import deployment_options

    s = Settings(placement={"home": {"site_a": 0.5}})
    opts = deployment_options(s, False, {})
    for name in ("LiveHub", "Api"):
        actor = dict(opts[name]["ray_actor_options"])
        actor.pop("runtime_env", None)  # the hub's Arrow pool (tests/serve/test_memory_env.py)
        assert actor == {"num_cpus": 0.1, "resources": {"site_a": 0.5}}

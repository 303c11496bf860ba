"""The configuration is strict: typos and out-of-range values are errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipelines.config import (
    ConfigError,
    DlibResnetConfig,
    FacenetConfig,
    Settings,
    env_overrides,
    load_settings,
)

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, tree: object) -> Path:
    path = tmp_path / "facewatch.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


@pytest.mark.parametrize(
    "tree, key",
    [
        ({"detector": {"min_face_sise": 30}}, "min_face_sise"),
        ({"quality": {"max_yaw": 40, "blurr": 3}}, "blurr"),
        ({"detectors": {}}, "detectors"),
        ({"embedder": {"type": "dlib-resnet", "sha256": "ab"}}, "sha256"),
        # thresholds belong to lists (calibrated) or to one search (--threshold, audited)
        ({"match": {"threshold": 0.9}}, "match"),
    ],
)
def test_unknown_keys_are_rejected_by_name(tmp_path, tree, key):
    with pytest.raises(ConfigError, match=key) as err:
        load_settings(write(tmp_path, tree), environ={})
    assert "facewatch.yaml" in str(err.value)


def test_unknown_environment_variable_is_rejected_by_name(tmp_path):
    with pytest.raises(ConfigError, match="min_face_sise"):
        load_settings(write(tmp_path, {}), environ={"FACEWATCH__DETECTOR__MIN_FACE_SISE": "30"})


def test_environment_overrides_file(tmp_path):
    path = write(tmp_path, {"detector": {"min_face_size": 60}, "quality": {"max_yaw": 30}})
    environ = {
        "FACEWATCH__DETECTOR__MIN_FACE_SIZE": "24",
        "FACEWATCH__DETECTOR__THRESHOLDS": "[0.5, 0.6, 0.6]",
        "FACEWATCH__EMBEDDER__FLIP_AVERAGE": "true",
        "UNRELATED": "1",
    }
    s = load_settings(path, environ=environ)
    assert s.detector.min_face_size == 24
    assert s.detector.thresholds == (0.5, 0.6, 0.6)
    assert s.embedder.flip_average is True
    assert s.quality.max_yaw == 30  # file value kept where no variable overrides it


def test_explicit_overrides_win_over_environment(tmp_path):
    s = load_settings(
        write(tmp_path, {}),
        overrides={"detector": {"min_face_size": 80}},
        environ={"FACEWATCH__DETECTOR__MIN_FACE_SIZE": "24"},
    )
    assert s.detector.min_face_size == 80


def test_a_placement_from_the_environment_replaces_the_files_resources(tmp_path):
    """Moving decoding to other nodes must not keep asking for the file's pool resource
    as well (no node would offer both: the archive stages would never be placed)."""
    path = write(tmp_path, {"placement": {"workers": {"facewatch_pool": 0.01}}})
    environ = {"FACEWATCH__PLACEMENT__WORKERS": '{"facewatch_decode": 0.01}'}
    s = load_settings(path, environ=environ, overrides={"placement": {"pool": {"gpu": 0.5}}})
    assert s.placement.workers == {"facewatch_decode": 0.01}
    assert s.placement.pool == {"gpu": 0.5}
    assert s.placement.home == {"facewatch_home": 0.01}  # untouched: the default


def test_env_overrides_parse_yaml_values():
    tree = env_overrides({"FACEWATCH__POOL__NUM_GPUS": "0.5", "FACEWATCH__STORE__URI": ""})
    assert tree == {"pool": {"num_gpus": 0.5}, "store": {"uri": None}}


def test_env_variable_naming_no_setting():
    with pytest.raises(ConfigError, match="names no setting"):
        env_overrides({"FACEWATCH__": "1"})


@pytest.mark.parametrize(
    "tree, key",
    [
        ({"detector": {"min_face_size": 4}}, "detector.min_face_size"),
        ({"detector": {"min_score": 1.5}}, "detector.min_score"),
        ({"quality": {"max_yaw": 91}}, "quality.max_yaw"),
        ({"quality": {"min_blur": -1}}, "quality.min_blur"),
        ({"pool": {"num_replicas": 0}}, "pool.num_replicas"),
        ({"search": {"fps": 0}}, "search.fps"),
        ({"search": {"video_extensions": ["mp4"]}}, "search.video_extensions"),
        ({"search": {"top_n": 0}}, "search.top_n"),
        ({"pool": {"device": "tpu"}}, "pool.device"),
        ({"embedder": {"type": "dlib-resnet", "template": "nope"}}, "template"),
        ({"embedder": {"type": "arcface"}}, "embedder"),
    ],
)
def test_out_of_bounds_values_are_rejected(tmp_path, tree, key):
    with pytest.raises(ConfigError, match=key):
        load_settings(write(tmp_path, tree), environ={})


def test_environment_values_are_validated_too(tmp_path):
    with pytest.raises(ConfigError, match="detector.min_face_size"):
        load_settings(write(tmp_path, {}), environ={"FACEWATCH__DETECTOR__MIN_FACE_SIZE": "x"})


@pytest.mark.parametrize(
    "text, message",
    [("detector: [1, 2", "invalid YAML"), ("- a\n- b\n", "mapping")],
)
def test_malformed_files(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_settings(path, environ={})


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "absent.yaml", environ={})


def test_embedder_is_chosen_by_type(tmp_path):
    s = load_settings(write(tmp_path, {"embedder": {"type": "facenet-vggface2"}}), environ={})
    assert isinstance(s.embedder, FacenetConfig)
    assert isinstance(Settings().embedder, DlibResnetConfig)


def test_shipped_yaml_loads_and_matches_the_built_in_defaults():
    shipped = load_settings(ROOT / "conf" / "facewatch.yaml", environ={})
    assert shipped == Settings()


def test_shipped_yaml_values_are_the_model_defaults_key_by_key():
    """Every value the YAML spells out equals the default it documents."""
    tree = yaml.safe_load((ROOT / "conf" / "facewatch.yaml").read_text())
    defaults = Settings().model_dump(mode="json")
    for section, values in tree.items():
        for key, value in values.items():
            expected = defaults[section][key]
            got = list(value) if isinstance(value, list) else value
            want = list(expected) if isinstance(expected, list | tuple) else expected
            assert got == want, f"conf/facewatch.yaml {section}.{key}: {value} != {expected}"


def test_embedder_options_without_type_mean_the_default_embedder(tmp_path):
    s = load_settings(write(tmp_path, {"embedder": {"flip_average": True}}), environ={})
    assert isinstance(s.embedder, DlibResnetConfig) and s.embedder.flip_average
    path = write(tmp_path, {"embedder": {"type": "facenet-vggface2"}})
    s = load_settings(path, environ={"FACEWATCH__EMBEDDER__FLIP_AVERAGE": "true"})
    assert isinstance(s.embedder, FacenetConfig) and s.embedder.flip_average

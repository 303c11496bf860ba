"""The bad-input corpus as data: each kind of bad input, the entry point it goes to, and the
clear answer it must get. tests/test_bad_input.py makes each input at test time and checks
the answer (and that the same entry point goes on working); docs/gen.py turns this table
into docs/generated/bad-input.md, so the page cannot drift from what is tested.

``expect`` is ``"ok"`` (an odd but valid input, accepted), or ``"<error> | <fragment>"``:
the error (an exception class, an exit code or an HTTP status) and a fragment of its
message.
"""

from __future__ import annotations

from typing import NamedTuple


class Case(NamedTuple):
    entry: str  # video, image, config, paths, api-json, api-camera, api-frame, api-auth
    kind: str
    expect: str


CASES: list[Case] = [
    # videos, as a search opens them (pipelines.video.probe, one Ray task per file)
    Case("video", "zero-byte file", "VideoError | empty file"),
    Case("video", "truncated (index at the end, cut before it)", "VideoError | not a readable"),
    Case("video", "corrupt header", "VideoError | not a readable"),
    Case("video", "wrong extension (a JPEG named .mp4)", "VideoError | still image"),
    Case("video", "text named .mp4", "VideoError | not a readable"),
    Case("video", "no video stream (audio only)", "VideoError | no video stream"),
    Case("video", "missing file", "VideoError | not found"),
    Case("video", "a folder named .mp4", "VideoError | not a regular file"),
    Case("video", "variable frame rate", "ok"),
    Case("video", "4K (3840x2160)", "ok"),
    Case("video", "2x2 pixels", "ok"),
    # photos, as enrolment and probes read them (pipelines.images.load_image)
    Case("image", "not image bytes", "ImageError | not a recognised image format"),
    Case("image", "zero-byte file", "ImageError | empty"),
    Case("image", "truncated JPEG", "ImageError | truncated"),
    Case(
        "image", "decompression bomb (144 MP PNG of a few KB)", "ImageTooLarge | decompression bomb"
    ),
    Case("image", "a folder", "ImageError | is a directory"),
    Case("image", "CMYK JPEG", "ok"),
    Case("image", "16-bit PNG", "ok"),
    Case("image", "RGBA PNG (alpha)", "ok"),
    Case("image", "EXIF-rotated JPEG (turned upright)", "ok"),
    Case("image", "animated GIF (first frame)", "ok"),
    # the configuration file (pipelines.config.load_settings; the CLI exits 2 with it)
    Case("config", "unknown key", "ConfigError | Extra inputs are not permitted"),
    Case("config", "wrong type", "ConfigError | search.fps"),
    Case("config", "NaN", "ConfigError | search.fps"),
    Case("config", "out of bounds", "ConfigError | search.top_n"),
    Case("config", "not a mapping (a list)", "ConfigError | mapping"),
    Case("config", "malformed YAML", "ConfigError | YAML"),
    Case("config", "unknown FACEWATCH__ variable", "ConfigError | nope: Extra inputs"),
    # folders given to a search (pipelines.video.find_videos, then `facewatch search`)
    Case("paths", "symlink loop", "ok"),
    Case("paths", "dangling symlink named .mp4 (unreadable)", "VideoError | broken symbolic link"),
    Case("paths", "10,000 files in one folder, none a video", "exit 2 | no video files found"),
    # the HTTP API: JSON bodies (POST /v1/cameras)
    Case("api-json", "malformed JSON", "400 | malformed JSON"),
    Case("api-json", "deep nesting (10,000 levels)", "400 | error parsing the body"),
    Case("api-json", "huge string (1 MB camera id)", "413 | request body too large"),
    Case("api-json", "wrong type (fps: 'fast')", "422 | fps"),
    Case("api-json", "unknown field", "422 | colour"),
    Case("api-json", "not an object (a list)", "422 | valid dictionary"),
    # the HTTP API: camera URLs and ids
    Case("api-camera", "file:// URL outside the allowed roots", "422 | folders cameras may read"),
    Case("api-camera", "javascript: URL", "422 | unsupported URL scheme"),
    Case("api-camera", "id with a path (../etc)", "422 | id"),
    # the HTTP API: pushed frames (POST /v1/cameras/{id}/frames)
    Case("api-frame", "not image bytes", "415 | not a PNG image"),
    Case("api-frame", "empty body", "400 | empty body"),
    Case("api-frame", "over the pixel limit (header only)", "413 | max_push_pixels"),
    Case("api-frame", "body over api.max_body_bytes", "413 | request body too large"),
    Case("api-frame", "to a camera that does not exist", "404 | no camera"),
    # the HTTP API: who may call
    Case("api-auth", "no token", "401 | authentication required"),
    Case("api-auth", "a camera token on an admin route", "403 | may not do this"),
]

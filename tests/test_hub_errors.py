"""Hub, HTTP and OS failures become our errors with the right exit code and a message naming the repo."""

from __future__ import annotations

import errno

import pytest

from preloader.errors import AuthError, DiskError, HubDataError, NotFoundError, PermissionDeniedError
from preloader.hub.errors import HubUnreachable, NetworkError, StatusError, status_error, translate
from preloader.spec import RepoSpec

SPEC = RepoSpec("model", "org/m", "main")


def status(code: int, **headers) -> StatusError:
    return status_error(code, "http://hub/api/models/org/m/revision/main?sig=secret", headers)


@pytest.mark.parametrize("error, token_set, kind, code, message", [
    (status(404, **{"X-Error-Code": "RepoNotFound"}), False, NotFoundError, 66,
     "model org/m@main: repository or revision not found or not visible; check the name and revision, or set a token if it is private"),
    (status(404, **{"X-Error-Code": "RepoNotFound"}), True, NotFoundError, 66,
     "model org/m@main: repository or revision not found or not visible; check the name and revision"),
    (status(404, **{"X-Error-Code": "RevisionNotFound"}), False, NotFoundError, 66,
     "model org/m@main: revision not found; check the branch, tag or commit"),
    (status(403, **{"X-Error-Code": "GatedRepo"}), True, AuthError, 77,
     "model org/m@main: the repo is gated; accept its terms on the hub and use a token that has access"),
    (status(401), False, AuthError, 77, "model org/m@main: the hub answered 401; it needs a token"),
    (status(403), True, AuthError, 77, "model org/m@main: the hub answered 403; the token lacks access to it"),
    (status(404), False, NotFoundError, 66, "model org/m@main: the hub answered 404"),
    (status(503), False, HubUnreachable, 75, "model org/m@main: the hub answered 503"),
    (NetworkError("cannot reach hub:443: refused"), False, HubUnreachable, 75,
     "model org/m@main: cannot reach the hub (cannot reach hub:443: refused)"),
    (OSError(errno.ENOSPC, "No space left on device", "/v/blob"), False, DiskError, 74,
     "cannot write the cache for model org/m@main: /v/blob: No space left on device; free space"),
    (OSError(errno.EROFS, "Read-only file system", "/v/blob"), False, PermissionDeniedError, 77,
     "cannot write the cache for model org/m@main: /v/blob: the volume is mounted read-only"),
    (OSError(errno.EACCES, "Permission denied", "/v/blob"), False, PermissionDeniedError, 77,
     "cannot write the cache for model org/m@main: /v/blob: permission denied for uid"),
    (status(418), False, HubDataError, 76,
     "model org/m@main: unexpected answer from the hub, nothing written: 418 for /api/models/org/m/revision/main"),
    (status(522), False, HubUnreachable, 75, "model org/m@main: the hub answered 522"),
])
def test_translate(error, token_set, kind, code, message):
    got = translate(error, SPEC, token_set)
    assert type(got) is kind and got.exit_code == code and str(got).startswith(message)  # the whole line, or its head
    assert "secret" not in str(got)  # a signed URL's query never reaches a message


def test_retry_after_is_kept_for_the_retry_schedule():
    assert translate(status(429, **{"Retry-After": "7"}), SPEC, False).retry_after == 7.0


def test_a_file_is_named():
    assert str(translate(status(404), SPEC, False, "weights/model.safetensors")) == \
        "model org/m@main file weights/model.safetensors: the hub answered 404"


def test_an_unknown_error_is_a_bug_and_raised_as_it_is():
    with pytest.raises(KeyError):
        translate(KeyError("x"), SPEC, False)


@pytest.mark.parametrize("code, headers, kind, exit_code", [
    (401, {}, AuthError, 77), (403, {"X-Error-Code": "GatedRepo"}, AuthError, 77),
    (404, {}, NotFoundError, 66), (401, {"X-Error-Code": "RepoNotFound"}, NotFoundError, 66),
    (400, {"X-Error-Code": "RevisionNotFound"}, NotFoundError, 66),
    (429, {}, HubUnreachable, 75), (503, {}, HubUnreachable, 75), (522, {}, HubUnreachable, 75),
    (418, {}, HubDataError, 76),
])
def test_the_http_layer_types_an_error_answer(code, headers, kind, exit_code):
    """Typed where the answer arrives (huggingface_hub's hf_raise_for_status): no caller re-reads the status."""
    error = status_error(code, "http://hub/api/models/org/m?sig=secret", headers)
    assert isinstance(error, kind) and isinstance(error, StatusError) and error.exit_code == exit_code
    assert error.status == code and "secret" not in str(error)


def test_the_connection_pool_raises_the_typed_error(hub):
    from preloader.hub.connections import Connections

    with pytest.raises(NotFoundError) as caught:
        Connections(5).get(f"{hub.url}/api/models/org/no-such-model/revision/main", {})
    assert isinstance(caught.value, StatusError) and caught.value.status in (401, 404)


def test_offline_and_not_cached_is_its_own_error(tmp_path):
    import preloader
    from preloader.errors import NotCachedError

    with pytest.raises(NotCachedError) as caught:
        preloader.preload(models="org/m", cache_dir=tmp_path / "hub", offline=True)
    assert caught.value.exit_code == 75
    assert str(caught.value).startswith("model org/m@main is not complete in the cache and offline mode is on")

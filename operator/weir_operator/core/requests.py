"""The request protocol: how a person (or CI) asks Weir to promote, abort, retry or undo.

On a cluster, `weir promote` (or `kubectl weir promote`) writes the annotation
`serving.weir.dev/request: {"id", "action", "revision"?}` on the ModelDeployment; `weir run`'s
control API stores the same annotation. The rollout core applies a request once per id and
answers in `status.lastRequest`. Pure: the CLI, the runtime and the operator share it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, get_args

from weir_operator.core.spec import GROUP
from weir_operator.core.status import RequestAction

REQUEST_ANNOTATION = f"{GROUP}/request"


@dataclass(frozen=True, slots=True)
class Request:
    """A person's (or CI's) request, e.g. from `weir promote`. `id` must be unique per request.
    `revision` guards promote, promote-full, abort and retry (rejected if the rollout has moved
    on to another revision) and, for undo, names the revision to bring back (a unique prefix
    will do; default: the previous one)."""

    id: str
    action: RequestAction
    revision: str | None = None
    by: str | None = None  # who asked, as the client said (see RequestRecord.by)


def parse_request(text: str | None) -> Request | str | None:
    """The request in the annotation; a message saying what is wrong with it; None if absent."""
    if not text:
        return None
    try:
        body: Any = json.loads(text)
    except ValueError as error:
        return f"annotation {REQUEST_ANNOTATION} is not JSON: {error}"
    actions = get_args(RequestAction)
    if not isinstance(body, dict) or not isinstance(body.get("id"), str) or not body["id"]:
        return f"annotation {REQUEST_ANNOTATION} needs an object with a string id"
    if body.get("action") not in actions:
        return f"annotation {REQUEST_ANNOTATION}: action must be one of {', '.join(actions)}"
    revision = body.get("revision")
    if revision is not None and not isinstance(revision, str):
        return f"annotation {REQUEST_ANNOTATION}: revision must be a string"
    by = body.get("by")
    if by is not None and (not isinstance(by, str) or len(by) > 256):
        return f"annotation {REQUEST_ANNOTATION}: by must be a string of at most 256 characters"
    return Request(id=body["id"], action=body["action"], revision=revision or None, by=by or None)

"""The Genesys Cloud error body, and the exception the emulator raises to produce one."""

from __future__ import annotations

import uuid
from typing import Any


class ApiError(Exception):
    """An error answer from the API: HTTP status, Genesys error code, message, field details.

    `details` entries follow Genesys' ErrorDetails shape ({"errorCode", "fieldName", ...}).
    `message` may hold `[name]` placeholders filled from `params` (Genesys'
    messageWithParams / messageParams convention).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        params: dict[str, str] | None = None,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message_with_params = message
        self.params = dict(params or {})
        self.details = list(details or [])
        self.headers = dict(headers or {})

    @property
    def message(self) -> str:
        text = self.message_with_params
        for name, value in self.params.items():
            text = text.replace("{" + name + "}", value)
        return text

    def body(self, context_id: str | None = None) -> dict[str, Any]:
        """The JSON body Genesys sends with this error."""
        return {
            "message": self.message,
            "code": self.code,
            "status": self.status,
            "messageWithParams": self.message_with_params,
            "messageParams": self.params,
            "contextId": context_id or str(uuid.uuid4()),
            "details": self.details,
            "errors": [],
        }


def field_error(status: int, code: str, field: str, message: str, value: Any = None) -> ApiError:
    """A 4xx about one request field; the details entry names the field."""
    params = {"field": field}
    if value is not None:
        params["value"] = str(value)
    error = ApiError(status, code, message, params=params)
    detail: dict[str, Any] = {"errorCode": code, "fieldName": field, "errorMessage": error.message}
    if value is not None:
        detail["fieldValue"] = str(value)
    error.details.append(detail)
    return error


def invalid_value(field: str, value: Any, why: str = "") -> ApiError:
    suffix = f": {why}" if why else ""
    return field_error(
        400,
        "invalid.value",
        field,
        "Value [{value}] is not valid for field [{field}]" + suffix,
        value="" if value is None else value,
    )


def missing_field(field: str) -> ApiError:
    return field_error(400, "required.field.missing", field, "The field [{field}] is required")


def bad_request(message: str) -> ApiError:
    return ApiError(400, "bad.request", message)


def not_found(message: str = "The requested resource was not found.") -> ApiError:
    return ApiError(404, "not.found", message)


def invalid_query_param(name: str, value: Any, allowed: tuple[str, ...]) -> ApiError:
    """A query parameter outside its allowed values (Genesys' invalid.query.param.value)."""
    return ApiError(
        400,
        "invalid.query.param.value",
        "Value [{value}] is not valid for parameter [{param}]. Allowable values are: {allowed}",
        params={"value": str(value), "param": name, "allowed": ", ".join(allowed)},
    )


def missing_permission(permission: str) -> ApiError:
    """403 as Genesys answers a caller whose roles lack `permission`."""
    return ApiError(
        403,
        "missing.permissions",
        "Unable to perform the requested action. You are missing the following "
        "permission(s): [{permissions}]",
        params={"permissions": permission},
    )


def invalid_id(field: str, value: Any) -> ApiError:
    """400 invalid.id, Genesys' answer to an id that is not a UUID (the text is the API's)."""
    error = ApiError(400, "invalid.id", "A non-UUID value was specified for an ID field")
    error.details.append({"errorCode": "invalid.id", "fieldName": field, "fieldValue": str(value)})
    return error


def is_uuid(value: Any) -> bool:
    """True for a string in the 8-4-4-4-12 hex form of a UUID (any version, any case)."""
    if not isinstance(value, str) or len(value) != 36:
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


class VersionConflict(ApiError):
    """A stale `version` (PATCH) or a user changed under a DELETE: 409 general.conflict here;
    the routes answer it as EmulatorConfig.version_conflict_status says (as_400())."""

    def __init__(self, version: int, current: int) -> None:
        super().__init__(
            409,
            "general.conflict",
            "The version supplied [{version}] does not match the current version of the user "
            "[{current}].",
            params={"version": str(version), "current": str(current)},
            details=[{"errorCode": "general.conflict", "fieldName": "version"}],
        )

    def as_400(self) -> ApiError:
        """The same conflict as the API's other answer to it: a 400 whose message says the
        version "does not match the current version" (the Terraform provider's
        IsVersionMismatch looks for that text)."""
        return ApiError(
            400,
            "bad.request",
            self.message_with_params,
            params=self.params,
            details=[{"errorCode": "bad.request", "fieldName": "version"}],
        )

"""What cards and policies share: the id pattern, and the metaclass that turns pydantic's validation errors into
Orchestra's typed ones. Apart from both so that a card can hold a policy (an agent's `RetryPolicy`)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field, ValidationError

_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:/@+\-]{0,127}$"

CardId = Annotated[str, Field(pattern=_ID_PATTERN, description="Stable id: letters, digits and _.:/@+- (max 128).")]


class TypedErrorModel(type(BaseModel)):  # type: ignore[misc]
    """Metaclass of models whose construction raises their own typed error (the class's ``_typed_error(exc)``)
    instead of pydantic's: `AgentCard(...)` in Python raises the same `CardError` as a card read from a file, a
    policy the same `PolicyError`. Done at the class call, not in __init__: pydantic routes model_validate through
    a custom __init__, and would wrap the error."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except ValidationError as exc:
            raise cls._typed_error(exc) from None

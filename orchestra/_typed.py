"""What cards and policies share: the id pattern, and the metaclass that turns pydantic's validation errors into
Orchestra's typed ones. Apart from both so that a card can hold a policy (an agent's `RetryPolicy`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, dataclass_transform

from pydantic import BaseModel, Field, PrivateAttr, ValidationError

if TYPE_CHECKING:
    # what type(BaseModel) is, named for type checkers only: at run time the private module is not imported
    from pydantic._internal._model_construction import ModelMetaclass as _ModelMetaclass
else:
    _ModelMetaclass = type(BaseModel)

_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:/@+\-]{0,127}$"

CardId = Annotated[str, Field(pattern=_ID_PATTERN, description="Stable id: letters, digits and _.:/@+- (max 128).")]


# pydantic's own, repeated: type checkers read it from a model's metaclass itself, not from the metaclass's base, so
# without it a card or policy took any keyword in their eyes (`AgentCard(id=3, colour="red")` passed)
@dataclass_transform(kw_only_default=True, field_specifiers=(Field, PrivateAttr))
class TypedErrorModel(_ModelMetaclass):
    """Metaclass of models whose construction raises their own typed error (the class's ``_typed_error(exc)``)
    instead of pydantic's: `AgentCard(...)` in Python raises the same `CardError` as a card read from a file, a
    policy the same `PolicyError`. Done at the class call, not in __init__: pydantic routes model_validate through
    a custom __init__, and would wrap the error."""

    if TYPE_CHECKING:
        # each class using this metaclass defines it, as a classmethod
        def _typed_error(cls, exc: ValidationError) -> Exception: ...

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except ValidationError as exc:
            raise cls._typed_error(exc) from None

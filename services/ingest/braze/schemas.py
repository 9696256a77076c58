"""Braze's /users/track and /users/identify request and response shapes (https://www.braze.com/docs/api/endpoints/user_data/)."""

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from kernel import limits

MAX_OBJECTS = 75  # Braze's limit per array of /users/track
MAX_IDENTIFY = 50  # Braze's limit per array of /users/identify


def _storable_text(value: str) -> str:
    return limits.refuse_nul(value, "the value")


Name = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_storable_text)]
Id = Annotated[str, Field(min_length=1, max_length=512), AfterValidator(_storable_text)]


class UserAlias(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alias_name: Id
    alias_label: Name


class Identifiers(BaseModel):
    """Who an object is about: external_id, else user_alias, else email (beside either of the others an email is
    an attribute). Braze's braze_id and phone are not supported."""

    model_config = ConfigDict(extra="forbid")

    external_id: Id | None = None
    user_alias: UserAlias | None = None
    email: Annotated[str, Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")] | None = None
    app_id: str | None = None
    update_existing_only: bool = Field(False, alias="_update_existing_only")

    @model_validator(mode="before")
    @classmethod
    def _one_identifier(cls, data: Any) -> Any:
        if isinstance(data, dict):
            if "braze_id" in data or "phone" in data:
                raise ValueError("braze_id and phone are not supported as identifiers: use external_id, user_alias or email")
            given = [k for k in ("external_id", "user_alias") if data.get(k) is not None]
            if len(given) > 1:
                raise ValueError("give one of 'external_id' or 'user_alias', not both")
            if given:  # an email beside them is the email attribute, not who the object is about
                return {k: v for k, v in data.items() if k != "email"}
            if data.get("email") is None:
                raise ValueError("one of 'external_id', 'user_alias' or 'email' is required")
        return data


class EventObject(Identifiers):
    name: Name
    time: str = Field(description="ISO 8601")
    properties: dict[str, Any] = Field(default_factory=dict)


class PurchaseObject(Identifiers):
    product_id: Name
    currency: Annotated[str, Field(pattern=r"^[A-Za-z]{3}$")]
    price: Annotated[float, Field(ge=0, le=1e12, allow_inf_nan=False)]
    quantity: Annotated[int, Field(ge=1, le=100)] = 1
    time: str = Field(description="ISO 8601")
    properties: dict[str, Any] = Field(default_factory=dict)


class ObjectError(BaseModel):
    """One object Braze's shape could not take, and why (the object's field named in `type`)."""

    type: str
    input_array: str
    index: int


class TrackRequest(BaseModel):
    """`POST /users/track`: up to 75 attribute, event and purchase objects (each checked on its own)."""

    model_config = ConfigDict(extra="forbid")

    attributes: Annotated[list[Any], Field(max_length=MAX_OBJECTS)] = Field(default_factory=list)
    events: Annotated[list[Any], Field(max_length=MAX_OBJECTS)] = Field(default_factory=list)
    purchases: Annotated[list[Any], Field(max_length=MAX_OBJECTS)] = Field(default_factory=list)


class TrackResponse(BaseModel):
    message: str
    attributes_processed: int | None = None
    events_processed: int | None = None
    purchases_processed: int | None = None
    errors: list[ObjectError] | None = None


class AliasToIdentify(BaseModel):
    model_config = ConfigDict(extra="forbid")

    external_id: Id
    user_alias: UserAlias


class EmailToIdentify(BaseModel):
    model_config = ConfigDict(extra="forbid")

    external_id: Id
    email: Annotated[str, Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")]
    prioritization: list[str] = Field(default_factory=list)


class IdentifyRequest(BaseModel):
    """`POST /users/identify`: alias-only (and email-only) profiles to merge into an external id."""

    model_config = ConfigDict(extra="forbid")

    aliases_to_identify: Annotated[list[Any], Field(max_length=MAX_IDENTIFY)] = Field(default_factory=list)
    emails_to_identify: Annotated[list[Any], Field(max_length=MAX_IDENTIFY)] = Field(default_factory=list)


class IdentifyResponse(BaseModel):
    message: str
    aliases_processed: int | None = None
    emails_processed: int | None = None
    errors: list[ObjectError] | None = None

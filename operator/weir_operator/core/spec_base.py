"""The base of every API model: camelCase names as in YAML, unknown fields refused, strict
types, CEL rules (`x-kubernetes-validations`) checked in Python as the API server checks them."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, GetJsonSchemaHandler, model_validator
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

from weir_operator.core.celrules import CelRule, holds


class ApiModel(BaseModel):
    """Base: camelCase field names as in YAML, unknown fields rejected, CEL rules enforced."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        validate_default=True,
        strict=True,  # as the API server: "yes" is not a boolean, "3" is not an integer
    )
    cel_rules: ClassVar[tuple[CelRule, ...]] = ()

    @model_validator(mode="after")
    def _check_cel_rules(self) -> ApiModel:
        if self.cel_rules:
            value = self.to_manifest()
            for rule in self.cel_rules:
                if not holds(rule, value):
                    raise PydanticCustomError(
                        "cel", "{message}", {"message": rule.message, "field": rule.field_path}
                    )
        return self

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        if cls.cel_rules:
            target = handler.resolve_ref_schema(json_schema)
            target["x-kubernetes-validations"] = [rule.to_schema() for rule in cls.cel_rules]
        return json_schema

    def to_manifest(self) -> dict[str, Any]:
        """The object as it reads in YAML: camelCase, unset optional fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")

//! The OpenAPI schemas of the types that serde reads by hand (feature `openapi`): a derive
//! cannot see what they accept, so they are written here as JSON Schema.

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::Schema;

/// A schema written as JSON: for types that serde reads by hand, where a derive cannot see
/// what they accept.
pub(crate) fn schema(json: serde_json::Value) -> RefOr<Schema> {
    RefOr::T(serde_json::from_value(json).expect("a valid schema object"))
}

/// A JSON number or a numeric string, as the deserialiser takes it.
impl utoipa::PartialSchema for crate::Num {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        schema(serde_json::json!({
            "description": "A non-negative integer, as a JSON number or a numeric string.",
            "oneOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": "^[0-9]{1,19}$"}
            ]
        }))
    }
}

impl utoipa::ToSchema for crate::Num {}

/// A positive integer, or `null` for the broker's default.
impl utoipa::PartialSchema for crate::RetentionValue {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        schema(serde_json::json!({
            "description": "A positive integer, or null for the broker's default.",
            "type": ["integer", "null"],
            "minimum": 1
        }))
    }
}

impl utoipa::ToSchema for crate::RetentionValue {}

//! OpenAPI schemas (feature `openapi`) for the types whose JSON form a derive cannot see:
//! prefixed ids and timestamps serialize as strings of a known shape.

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};

/// A string schema with a pattern or a format, a description and one example.
pub(crate) fn string(
    pattern: Option<&str>,
    format: Option<KnownFormat>,
    description: &str,
    example: &str,
) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(pattern)
        .format(format.map(SchemaFormat::KnownFormat))
        .description(Some(description))
        .examples([serde_json::Value::from(example)])
        .into()
}

//! JSON Schema (2020-12) of a protobuf message as proto3's JSON mapping
//! writes and reads it, for MCP tools' `inputSchema` and `outputSchema`.
//!
//! The rules, chosen for agent clients rather than for round-tripping:
//! - Fully inlined: no `$ref` / `$defs` (several agent clients reject them).
//!   A message that contains itself is expanded [`RECURSION_LIMIT`] times
//!   on one path; below that it is `{"type": "object"}` with a description
//!   saying it was cut, and no nesting goes deeper than [`MAX_DEPTH`].
//! - Property names are the JSON names (`lowerCamelCase`), as the mapping
//!   writes them; `additionalProperties: false` so a misspelt field is
//!   caught by the client.
//! - int64, uint64 (and their fixed/sint forms) are decimal strings, as the
//!   mapping writes them; 32-bit integers are integers with their bounds;
//!   floats are numbers; bytes are base64 strings; enums are their value
//!   names (`google.protobuf.NullValue` is `null`).
//! - `oneof`: every member is a property, and an `allOf` entry per oneof
//!   says at most one of its members is set. proto3 `optional` fields are
//!   ordinary properties (their synthetic oneof is not a choice).
//! - maps are objects (`additionalProperties` is the value's schema, and
//!   `propertyNames` says what an integer or bool key looks like); repeated
//!   fields are arrays.
//! - Well-known types in their JSON forms: Timestamp (RFC 3339 string),
//!   Duration (`"1.5s"`), the wrappers (their value's schema), Struct
//!   (object), Value (anything), ListValue (array), FieldMask (a string of
//!   comma-separated paths), Any (an object with `@type`), Empty (`{}`).
//! - Descriptions are the contract's comments.
//! - Required: proto3 has no `required`, and every field may be omitted on
//!   input (it then has its default). An input field is required only when
//!   the contract marks it `(google.api.field_behavior) = REQUIRED`; fields
//!   marked `OUTPUT_ONLY` are `readOnly`. In an output schema, the fields the
//!   gateway always writes (those without presence: scalars, repeated, maps,
//!   since defaults are written out) are required, and fields with presence
//!   (messages, `optional`, oneof members) are not.

use prost_reflect::{Cardinality, EnumDescriptor, FieldDescriptor, Kind, MessageDescriptor, Value as Reflected};
use serde_json::{Map, Value, json};

use super::comments;

/// The JSON Schema dialect every root schema names.
pub const DIALECT: &str = "https://json-schema.org/draft/2020-12/schema";

/// How many times one message type may appear on a path from the root
/// before it is cut (a tree of comments, say, is three levels deep).
pub const RECURSION_LIMIT: usize = 3;

/// The deepest nesting of messages expanded, recursive or not.
pub const MAX_DEPTH: usize = 32;

/// `google.api.FieldBehavior` values this generator reads.
const REQUIRED: i32 = 2;
const OUTPUT_ONLY: i32 = 3;

/// Which way the message travels: it changes what is required.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Arguments a client sends (`inputSchema`).
    Input,
    /// A result the gateway writes (`outputSchema`).
    Output,
}

/// The root schema of `message`, with `$schema` set.
pub fn message_schema(message: &MessageDescriptor, direction: Direction) -> Value {
    let mut generator = Generator {
        direction,
        path: Vec::new(),
        field_behavior: message.parent_pool().get_extension_by_name("google.api.field_behavior"),
    };
    let mut schema = generator.message(message);
    if let Value::Object(map) = &mut schema {
        map.insert("$schema".into(), Value::String(DIALECT.into()));
    }
    schema
}

struct Generator {
    direction: Direction,
    /// The messages being expanded, root first: for the recursion cut.
    path: Vec<String>,
    field_behavior: Option<prost_reflect::ExtensionDescriptor>,
}

impl Generator {
    fn message(&mut self, message: &MessageDescriptor) -> Value {
        if let Some(known) = well_known(message.full_name()) {
            return known;
        }
        let seen = self.path.iter().filter(|m| *m == message.full_name()).count();
        if seen >= RECURSION_LIMIT || self.path.len() >= MAX_DEPTH {
            return json!({
                "type": "object",
                "description": format!(
                    "A {} (nested too deep to describe here: the schema stops after {RECURSION_LIMIT} levels of the same message or {MAX_DEPTH} levels in all).",
                    message.full_name()
                ),
            });
        }
        self.path.push(message.full_name().to_string());
        let mut properties = Map::new();
        let mut required = Vec::new();
        for field in message.fields() {
            let mut schema = self.field(&field);
            let behavior = self.behavior(&field);
            if let Value::Object(map) = &mut schema {
                if let Some(text) = comments::of(&field.parent_file(), field.path()) {
                    map.insert("description".into(), Value::String(text));
                }
                if behavior.contains(&OUTPUT_ONLY) && self.direction == Direction::Input {
                    map.insert("readOnly".into(), Value::Bool(true));
                }
            }
            let is_required = match self.direction {
                Direction::Input => behavior.contains(&REQUIRED),
                Direction::Output => !field.supports_presence(),
            };
            if is_required {
                required.push(Value::String(field.json_name().to_string()));
            }
            properties.insert(field.json_name().to_string(), schema);
        }
        self.path.pop();

        let mut schema = Map::new();
        schema.insert("type".into(), "object".into());
        if let Some(text) = comments::of(&message.parent_file(), message.path()) {
            schema.insert("description".into(), Value::String(text));
        }
        schema.insert("properties".into(), Value::Object(properties));
        if !required.is_empty() {
            schema.insert("required".into(), Value::Array(required));
        }
        schema.insert("additionalProperties".into(), Value::Bool(false));
        let choices: Vec<Value> = message
            .oneofs()
            .filter(|o| !o.is_synthetic())
            .map(|oneof| {
                let members: Vec<Value> = oneof.fields().map(|f| json!({"required": [f.json_name()]})).collect();
                // At most one member: any single one, or none of them.
                let mut alternatives = members.clone();
                alternatives.push(json!({"not": {"anyOf": members}}));
                let mut choice = json!({"oneOf": alternatives});
                if let Some(text) = comments::of(&oneof.parent_file(), oneof.path()) {
                    choice["description"] = Value::String(text);
                }
                choice
            })
            .collect();
        if !choices.is_empty() {
            schema.insert("allOf".into(), Value::Array(choices));
        }
        Value::Object(schema)
    }

    fn field(&mut self, field: &FieldDescriptor) -> Value {
        if field.is_map() {
            let Kind::Message(entry) = field.kind() else {
                return json!({"type": "object"});
            };
            let key = entry.map_entry_key_field();
            let value = entry.map_entry_value_field();
            let mut schema = json!({
                "type": "object",
                "additionalProperties": self.single(&value),
            });
            if let Some(names) = key_names(&key.kind()) {
                schema["propertyNames"] = names;
            }
            return schema;
        }
        let single = self.single(field);
        if field.cardinality() == Cardinality::Repeated {
            json!({"type": "array", "items": single})
        } else {
            single
        }
    }

    /// The schema of one value of `field`'s type.
    fn single(&mut self, field: &FieldDescriptor) -> Value {
        match field.kind() {
            Kind::Message(message) => self.message(&message),
            Kind::Enum(enumeration) => enum_schema(&enumeration),
            kind => scalar(&kind),
        }
    }

    /// The field's `google.api.field_behavior` values (none when the pool
    /// does not know the extension).
    fn behavior(&self, field: &FieldDescriptor) -> Vec<i32> {
        let Some(extension) = &self.field_behavior else {
            return Vec::new();
        };
        let options = field.options();
        if !options.has_extension(extension) {
            return Vec::new();
        }
        match &*options.get_extension(extension) {
            Reflected::List(values) => values.iter().filter_map(Reflected::as_enum_number).collect(),
            Reflected::EnumNumber(n) => vec![*n],
            _ => Vec::new(),
        }
    }
}

fn scalar(kind: &Kind) -> Value {
    match kind {
        Kind::Double | Kind::Float => json!({"type": "number"}),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            json!({"type": "integer", "minimum": i32::MIN, "maximum": i32::MAX})
        }
        Kind::Uint32 | Kind::Fixed32 => json!({"type": "integer", "minimum": 0, "maximum": u32::MAX}),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => json!({
            "type": "string",
            "pattern": "^-?[0-9]+$",
            "description": "A 64-bit integer, as a decimal string."
        }),
        Kind::Uint64 | Kind::Fixed64 => json!({
            "type": "string",
            "pattern": "^[0-9]+$",
            "description": "An unsigned 64-bit integer, as a decimal string."
        }),
        Kind::Bool => json!({"type": "boolean"}),
        Kind::String => json!({"type": "string"}),
        Kind::Bytes => json!({"type": "string", "contentEncoding": "base64"}),
        Kind::Message(_) | Kind::Enum(_) => json!({}),
    }
}

fn enum_schema(enumeration: &EnumDescriptor) -> Value {
    if enumeration.full_name() == "google.protobuf.NullValue" {
        return json!({"type": "null"});
    }
    let names: Vec<String> = enumeration.values().map(|v| v.name().to_string()).collect();
    let mut schema = json!({"type": "string", "enum": names});
    let described: Vec<String> = enumeration
        .values()
        .filter_map(|v| comments::of(&v.parent_file(), v.path()).map(|c| format!("{}: {c}", v.name())))
        .collect();
    let head = comments::of(&enumeration.parent_file(), enumeration.path());
    let text = head.into_iter().chain(described).collect::<Vec<_>>().join("\n");
    if !text.is_empty() {
        schema["description"] = Value::String(text);
    }
    schema
}

/// What a map key looks like as a JSON property name.
fn key_names(kind: &Kind) -> Option<Value> {
    match kind {
        Kind::String => None,
        Kind::Bool => Some(json!({"enum": ["true", "false"]})),
        Kind::Uint32 | Kind::Fixed32 | Kind::Uint64 | Kind::Fixed64 => Some(json!({"pattern": "^[0-9]+$"})),
        _ => Some(json!({"pattern": "^-?[0-9]+$"})),
    }
}

/// The JSON forms of the well-known types (the proto3 JSON mapping's table).
fn well_known(name: &str) -> Option<Value> {
    let wrapper = |kind: Kind| Some(scalar(&kind));
    match name {
        "google.protobuf.Timestamp" => Some(json!({
            "type": "string",
            "format": "date-time",
            "description": "An RFC 3339 time in UTC, e.g. 2026-01-31T12:00:00Z."
        })),
        "google.protobuf.Duration" => Some(json!({
            "type": "string",
            "pattern": "^-?[0-9]+(\\.[0-9]{1,9})?s$",
            "description": "Seconds with an 's' suffix, e.g. 1.5s."
        })),
        "google.protobuf.DoubleValue" | "google.protobuf.FloatValue" => wrapper(Kind::Double),
        "google.protobuf.Int64Value" => wrapper(Kind::Int64),
        "google.protobuf.UInt64Value" => wrapper(Kind::Uint64),
        "google.protobuf.Int32Value" => wrapper(Kind::Int32),
        "google.protobuf.UInt32Value" => wrapper(Kind::Uint32),
        "google.protobuf.BoolValue" => wrapper(Kind::Bool),
        "google.protobuf.StringValue" => wrapper(Kind::String),
        "google.protobuf.BytesValue" => wrapper(Kind::Bytes),
        "google.protobuf.Struct" => Some(json!({"type": "object"})),
        "google.protobuf.Value" => Some(json!({"description": "Any JSON value."})),
        "google.protobuf.ListValue" => Some(json!({"type": "array"})),
        "google.protobuf.FieldMask" => Some(json!({
            "type": "string",
            "description": "Field paths in lowerCamelCase, separated by commas, e.g. price,stock."
        })),
        "google.protobuf.Any" => Some(json!({
            "type": "object",
            "properties": {"@type": {"type": "string", "description": "The type URL of the packed message."}},
            "required": ["@type"]
        })),
        "google.protobuf.Empty" => Some(json!({"type": "object", "additionalProperties": false})),
        _ => None,
    }
}

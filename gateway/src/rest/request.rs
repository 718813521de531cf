//! A REST request as the method's request message: the path's variables,
//! the query's parameters and the body, each put where the route's
//! `google.api.http` rule says. Every refusal names what was wrong (the
//! field, the parameter, the place in the body) and becomes a 400.

use bytes::Bytes;
use prost_reflect::{DeserializeOptions, DynamicMessage, Kind, MessageDescriptor, ReflectMessage, Value};

use super::fields;
use crate::catalog::{BodyRule, Route};

/// Builds the request message. `me` is the signed-in user's id: a path
/// variable whose value is `me` stands for it.
pub fn build(
    route: &Route,
    path_values: &[(&str, String)],
    query: Option<&str>,
    body: &Bytes,
    me: Option<&str>,
) -> Result<DynamicMessage, String> {
    let input = route.method.descriptor.input();
    let mut message = match &route.body {
        BodyRule::Whole => from_json(&input, body, "the body")?,
        BodyRule::Field(field) => {
            let mut message = DynamicMessage::new(input.clone());
            if !body.is_empty() {
                let value = match field.kind() {
                    Kind::Message(inner) if !field.is_list() && !field.is_map() => {
                        Value::Message(from_json(&inner, body, "the body")?)
                    }
                    _ => field_from_json(&message, field, body)?,
                };
                message.set_field(field, value);
            }
            message
        }
        BodyRule::None => {
            if !body.is_empty() {
                return Err(format!(
                    "{} {} takes no body; send its fields as query parameters",
                    route.http_method, route.template
                ));
            }
            DynamicMessage::new(input.clone())
        }
    };
    let mut bound: Vec<&str> = Vec::with_capacity(path_values.len());
    for (field_path, value) in path_values {
        let value = match (value.as_str(), me) {
            ("me", Some(user)) => user,
            _ => value.as_str(),
        };
        fields::set_text(&mut message, field_path, value).map_err(|e| format!("path variable '{field_path}': {e}"))?;
        bound.push(field_path);
    }
    if let Some(query) = query {
        if matches!(route.body, BodyRule::Whole) && !query.is_empty() {
            return Err("query parameters cannot be used where the whole body is the request".into());
        }
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            if bound.iter().any(|b| same_path(&input, b, &name)) {
                return Err(format!("query parameter '{name}' is already set by the path"));
            }
            if let BodyRule::Field(field) = &route.body
                && (name == field.name() || name == field.json_name())
            {
                return Err(format!("query parameter '{name}' is the body's field"));
            }
            fields::set_text(&mut message, &name, &value).map_err(|e| format!("query parameter '{name}': {e}"))?;
        }
    }
    Ok(message)
}

/// `body` as a `descriptor` in proto3 JSON (camelCase or original names);
/// an empty body is the empty message.
fn from_json(descriptor: &MessageDescriptor, body: &Bytes, what: &str) -> Result<DynamicMessage, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(DynamicMessage::new(descriptor.clone()));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let message = deserialize(descriptor, &mut deserializer).map_err(|e| describe(what, &e))?;
    deserializer
        .end()
        .map_err(|e| format!("{what} has more after its JSON value: {e}"))?;
    Ok(message)
}

fn deserialize<'de, D: serde::Deserializer<'de>>(
    descriptor: &MessageDescriptor,
    deserializer: D,
) -> Result<DynamicMessage, serde_path_to_error::Error<D::Error>> {
    let mut track = serde_path_to_error::Track::new();
    let tracked = serde_path_to_error::Deserializer::new(deserializer, &mut track);
    DynamicMessage::deserialize_with_options(descriptor.clone(), tracked, &DeserializeOptions::new())
        .map_err(|e| serde_path_to_error::Error::new(track.path(), e))
}

/// A non-message body field (`body: "tags"` of a repeated string): read as
/// the value of that field in a one-field object.
fn field_from_json(
    message: &DynamicMessage,
    field: &prost_reflect::FieldDescriptor,
    body: &Bytes,
) -> Result<Value, String> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let mut object = serde_json::Map::with_capacity(1);
    object.insert(field.json_name().to_string(), value);
    let holder = DynamicMessage::deserialize(message.descriptor(), serde_json::Value::Object(object))
        .map_err(|e| format!("the body is not a valid '{}': {e}", field.name()))?;
    Ok(holder.get_field(field).into_owned())
}

/// Names the place in the body: `the body: items[0].quantity: invalid type…`.
fn describe(what: &str, error: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let path = error.path().to_string();
    let inner = error.inner();
    let cause = match inner.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            return format!("{what} is not valid JSON: {inner}");
        }
        _ => inner.to_string(),
    };
    if path == "." || path.is_empty() {
        format!("{what}: {cause}")
    } else {
        format!("{what}: field '{path}': {cause}")
    }
}

/// Whether two field paths name the same field (one may be in JSON names).
fn same_path(input: &MessageDescriptor, a: &str, b: &str) -> bool {
    match (fields::resolve(input, a), fields::resolve(input, b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

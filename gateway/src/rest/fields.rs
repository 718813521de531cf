//! Request fields named by a path variable or a query parameter: a dotted
//! path (`product_id`, `page_size` or `pageSize`, `filter.category`) and a
//! value written as text. Each value is read the way proto3 JSON reads it,
//! so `"42"` is an int64, `"BOOKS"` an enum, `"2026-01-01T00:00:00Z"` a
//! Timestamp, exactly as in a body.

use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage, Value};

/// The fields along `path`, from `message` down. Each step is a field's
/// proto name or JSON name; every step but the last is a singular message.
pub fn resolve(message: &MessageDescriptor, path: &str) -> Result<Vec<FieldDescriptor>, String> {
    let mut fields = Vec::new();
    let mut current = message.clone();
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        let field = current
            .get_field_by_name(part)
            .or_else(|| current.get_field_by_json_name(part))
            .ok_or_else(|| format!("{} has no field '{part}'", current.full_name()))?;
        if parts.peek().is_some() {
            match field.kind() {
                Kind::Message(next) if !field.is_list() && !field.is_map() => current = next,
                _ => return Err(format!("'{part}' is not a message field, so it has no '.' fields")),
            }
        }
        fields.push(field);
    }
    Ok(fields)
}

/// Sets the field at `path` in `message` to `text`; a repeated field gets
/// one more element. Fields of maps and repeated messages cannot be set
/// from text.
pub fn set_text(message: &mut DynamicMessage, path: &str, text: &str) -> Result<(), String> {
    let fields = resolve(&message.descriptor(), path)?;
    let Some((leaf, parents)) = fields.split_last() else {
        return Err("the field path is empty".into());
    };
    if leaf.is_map() || (leaf.is_list() && matches!(leaf.kind(), Kind::Message(_))) {
        return Err(format!(
            "'{}' is a map or a list of messages; send it in the body",
            leaf.name()
        ));
    }
    let mut target = message;
    for parent in parents {
        target = match target.get_field_mut(parent) {
            Value::Message(inner) => inner,
            _ => return Err(format!("'{}' is not a message", parent.name())),
        };
    }
    let value = parse(leaf, text)?;
    if leaf.is_list() {
        if let Value::List(list) = target.get_field_mut(leaf) {
            list.push(value);
        }
    } else {
        target.set_field(leaf, value);
    }
    Ok(())
}

/// `text` as a value of the field's type, read as proto3 JSON reads it.
fn parse(field: &FieldDescriptor, text: &str) -> Result<Value, String> {
    let json = match field.kind() {
        Kind::Bool => match text {
            "true" => serde_json::Value::Bool(true),
            "false" => serde_json::Value::Bool(false),
            _ => return Err(format!("'{text}' is not a bool (true or false)")),
        },
        _ => serde_json::Value::String(text.to_string()),
    };
    // A one-field object of the field's own message, so the field is read
    // with every rule proto3 JSON has for its type (well-known types too).
    let mut object = serde_json::Map::with_capacity(1);
    object.insert(field.json_name().to_string(), wrap_list(field, json));
    let holder = DynamicMessage::deserialize(field.parent_message().clone(), serde_json::Value::Object(object))
        .map_err(|e| {
            format!(
                "'{text}' is not a valid {}: {}",
                type_name(field),
                first_line(&e.to_string())
            )
        })?;
    let value = holder.get_field(field).into_owned();
    Ok(match value {
        Value::List(mut items) if field.is_list() => items.pop().unwrap_or_else(|| field.kind().default_value()),
        other => other,
    })
}

fn wrap_list(field: &FieldDescriptor, json: serde_json::Value) -> serde_json::Value {
    if field.is_list() {
        serde_json::Value::Array(vec![json])
    } else {
        json
    }
}

/// The field's type as a user would name it: `int32`, `shop.v1.Status`.
pub fn type_name(field: &FieldDescriptor) -> String {
    match field.kind() {
        Kind::Message(m) => m.full_name().to_string(),
        Kind::Enum(e) => e.full_name().to_string(),
        other => format!("{other:?}").to_lowercase(),
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> prost_reflect::DescriptorPool {
        prost_reflect::DescriptorPool::decode(meshwork_proto::FILE_DESCRIPTOR_SET).unwrap()
    }

    #[test]
    fn names_and_values_as_proto3_json_reads_them() {
        let pool = pool();
        let list = pool.get_message_by_name("shop.catalog.v1.ListProductsRequest").unwrap();
        let mut m = DynamicMessage::new(list);
        set_text(&mut m, "pageSize", "5").unwrap();
        set_text(&mut m, "category", "books").unwrap();
        assert_eq!(m.get_field_by_name("page_size").unwrap().as_i32(), Some(5));
        let error = set_text(&mut m, "page_size", "five").unwrap_err();
        assert!(error.contains("'five' is not a valid int32"), "{error}");
        let error = set_text(&mut m, "colour", "red").unwrap_err();
        assert_eq!(error, "shop.catalog.v1.ListProductsRequest has no field 'colour'");
    }

    #[test]
    fn repeated_and_nested_fields() {
        let pool = pool();
        let batch = pool
            .get_message_by_name("shop.catalog.v1.BatchGetProductsRequest")
            .unwrap();
        let mut m = DynamicMessage::new(batch);
        set_text(&mut m, "productIds", "a").unwrap();
        set_text(&mut m, "product_ids", "b").unwrap();
        let ids = m.get_field_by_name("product_ids").unwrap();
        assert_eq!(ids.as_list().unwrap().len(), 2);

        let update = pool
            .get_message_by_name("shop.users.v1.UpdatePreferencesRequest")
            .unwrap();
        let mut m = DynamicMessage::new(update);
        set_text(&mut m, "preferences.currency", "EUR").unwrap();
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, r#"{"preferences":{"currency":"EUR"}}"#);
        let error = set_text(&mut m, "user_id.x", "1").unwrap_err();
        assert!(error.contains("not a message field"), "{error}");
    }
}

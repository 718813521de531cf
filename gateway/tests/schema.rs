//! The MCP tools' JSON Schemas, generated from a contract that uses every
//! protobuf feature (tests/protos/schematest/everything.proto, compiled here
//! with protox), checked against the JSON Schema 2020-12 meta-schema, and
//! against real messages: what the gateway writes (proto3 JSON, defaults
//! written out) validates against the output schema, and what a client
//! could get wrong is refused by the input schema.
#![allow(clippy::unwrap_used)]

use meshwork_gateway::mcp::schema::{DIALECT, Direction, RECURSION_LIMIT, message_schema};
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};
use serde_json::{Value, json};

fn pool() -> DescriptorPool {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/protos");
    let mut compiler = protox::Compiler::new([dir]).unwrap();
    compiler.include_source_info(true).include_imports(true);
    compiler.open_file("schematest/everything.proto").unwrap();
    compiler.descriptor_pool()
}

fn message(name: &str) -> MessageDescriptor {
    pool().get_message_by_name(name).unwrap()
}

fn validator(schema: &Value) -> jsonschema::Validator {
    jsonschema::meta::validate(schema).unwrap_or_else(|e| panic!("not a valid 2020-12 schema: {e}\n{schema:#}"));
    jsonschema::options()
        .should_validate_formats(true)
        .build(schema)
        .unwrap()
}

fn no_refs(value: &Value) {
    match value {
        Value::Object(map) => {
            assert!(
                !map.contains_key("$ref") && !map.contains_key("$defs"),
                "found a reference"
            );
            map.values().for_each(no_refs);
        }
        Value::Array(items) => items.iter().for_each(no_refs),
        _ => {}
    }
}

/// What the gateway writes for a message given as proto3 JSON.
fn written(descriptor: &MessageDescriptor, json: Value) -> Value {
    let message = DynamicMessage::deserialize(descriptor.clone(), json).unwrap();
    message
        .serialize_with_options(
            serde_json::value::Serializer,
            &SerializeOptions::new().skip_default_fields(false),
        )
        .unwrap()
}

fn full() -> Value {
    json!({
        "name": "n", "createdBy": "server", "ratio": 0.5, "share": 1.5,
        "small": -5, "smallSigned": -6, "smallFixed": 7, "smallUnsigned": 8, "smallUnsignedFixed": 9,
        "big": "-9007199254740993", "bigSigned": "-1", "bigFixed": "12",
        "bigUnsigned": "18446744073709551615", "bigUnsignedFixed": "14",
        "flag": true, "blob": "aGVsbG8=", "colour": "COLOUR_BLUE", "tags": ["a", "b"],
        "inners": [{"text": "x"}], "counts": {"a": "1"}, "byNumber": {"-3": {"text": "y"}},
        "byFlag": {"true": "yes"}, "inner": {"text": "z"}, "voucher": {"text": "v"}, "maybe": 0,
        "at": "2026-01-31T12:00:00Z", "took": "1.5s", "wrappedBig": "5", "wrappedText": "t",
        "wrappedFlag": false, "wrappedRatio": 2.0, "wrappedBlob": "AA==",
        "extra": {"k": [1, "two", null]}, "anything": [1, {"a": true}], "list": [1, "x"],
        "mask": "ratio,inner.text", "packed": {"@type": "type.googleapis.com/schematest.v1.Inner", "text": "p"},
        "nothing": {}, "nullValue": null, "colours": ["COLOUR_RED"]
    })
}

#[test]
fn every_schema_is_valid_2020_12_and_fully_inlined() {
    let pool = pool();
    for name in [
        "schematest.v1.Everything",
        "schematest.v1.Node",
        "google.protobuf.Empty",
    ] {
        let descriptor = pool.get_message_by_name(name).unwrap();
        for direction in [Direction::Input, Direction::Output] {
            let schema = message_schema(&descriptor, direction);
            assert_eq!(schema["$schema"], DIALECT);
            validator(&schema);
            no_refs(&schema);
        }
    }
}

#[test]
fn what_the_gateway_writes_matches_the_output_schema() {
    let descriptor = message("schematest.v1.Everything");
    let output = validator(&message_schema(&descriptor, Direction::Output));
    for instance in [full(), json!({}), json!({"card": "4242"})] {
        let written = written(&descriptor, instance);
        let errors: Vec<String> = output.iter_errors(&written).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}\n{written:#}");
    }
    // Defaults are written out, so fields without presence are required;
    // fields with presence are not.
    let schema = message_schema(&descriptor, Direction::Output);
    let required: Vec<&str> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(required.contains(&"big") && required.contains(&"tags") && required.contains(&"counts"));
    assert!(!required.contains(&"inner") && !required.contains(&"maybe") && !required.contains(&"card"));
}

#[test]
fn the_input_schema_describes_the_json_mapping() {
    let schema = message_schema(&message("schematest.v1.Everything"), Direction::Input);
    let p = &schema["properties"];
    assert_eq!(
        schema["required"],
        json!(["name"]),
        "only field_behavior REQUIRED is required"
    );
    assert_eq!(p["name"]["description"], "The caller's name: the one required field.");
    assert_eq!(p["createdBy"]["readOnly"], true);
    assert_eq!(p["big"]["type"], "string");
    assert_eq!(p["bigUnsigned"]["pattern"], "^[0-9]+$");
    assert_eq!(p["small"]["maximum"], i32::MAX);
    assert_eq!(p["smallUnsigned"]["minimum"], 0);
    assert_eq!(p["blob"]["contentEncoding"], "base64");
    assert_eq!(
        p["colour"]["enum"],
        json!(["COLOUR_UNSPECIFIED", "COLOUR_BLUE", "COLOUR_RED"])
    );
    assert!(
        p["colour"]["description"]
            .as_str()
            .unwrap()
            .contains("COLOUR_BLUE: Like the sky.")
    );
    assert_eq!(p["colours"]["items"]["type"], "string");
    assert_eq!(p["counts"]["additionalProperties"]["type"], "string");
    assert_eq!(p["byNumber"]["propertyNames"]["pattern"], "^-?[0-9]+$");
    assert_eq!(p["byFlag"]["propertyNames"]["enum"], json!(["true", "false"]));
    assert_eq!(p["at"]["format"], "date-time");
    assert_eq!(p["wrappedBig"]["type"], "string");
    assert_eq!(p["wrappedFlag"]["type"], "boolean");
    assert_eq!(p["extra"]["type"], "object");
    assert_eq!(p["nullValue"]["type"], "null");
    assert_eq!(p["packed"]["required"], json!(["@type"]));
    assert_eq!(p["inner"]["additionalProperties"], false);
    assert!(
        schema["allOf"][0]["description"]
            .as_str()
            .unwrap()
            .contains("one way to pay")
    );
}

#[test]
fn the_input_schema_refuses_what_the_contract_does_not_take() {
    let descriptor = message("schematest.v1.Everything");
    let input = validator(&message_schema(&descriptor, Direction::Input));
    let mut good = full();
    good.as_object_mut().unwrap().remove("createdBy");
    assert!(
        input.is_valid(&good),
        "{:?}",
        input.iter_errors(&good).map(|e| e.to_string()).collect::<Vec<_>>()
    );
    // What proto3 JSON itself accepts is accepted by the gateway's parser too.
    DynamicMessage::deserialize(descriptor.clone(), good.clone()).unwrap();

    let with = |key: &str, value: Value| {
        let mut v = json!({"name": "n"});
        v[key] = value;
        v
    };
    let bad = [
        json!({}),                                  // name is required
        with("big", json!(12)),                     // int64 is a string
        with("big", json!("twelve")),               // ... of digits
        with("small", json!(4_294_967_296_u64)),    // out of int32's range
        with("colour", json!("COLOUR_GREEN")),      // not a value of the enum
        with("at", json!("yesterday")),             // not RFC 3339
        with("took", json!("5 minutes")),           // not a Duration
        with("byFlag", json!({"maybe": "x"})),      // a bool key
        with("inner", json!({"txt": "typo"})),      // unknown field
        with("tags", json!("a")),                   // repeated is an array
        with("packed", json!({"text": "no type"})), // Any needs @type
    ];
    for instance in bad {
        assert!(!input.is_valid(&instance), "accepted {instance}");
    }
    let both = with("card", json!("4242"));
    let mut both = both;
    both["voucher"] = json!({"text": "v"});
    assert!(!input.is_valid(&both), "two members of one oneof");
    assert!(input.is_valid(&with("card", json!("4242"))));
}

#[test]
fn recursion_is_cut_at_the_documented_depth() {
    let schema = message_schema(&message("schematest.v1.Node"), Direction::Input);
    let mut level = &schema;
    for _ in 0..RECURSION_LIMIT {
        assert_eq!(level["properties"]["label"]["type"], "string");
        level = &level["properties"]["children"]["items"];
    }
    assert!(level.get("properties").is_none(), "{level:#}");
    assert!(level["description"].as_str().unwrap().contains("nested too deep"));
    assert_eq!(schema["description"], "A node of a tree.");
    // A deep tree still validates: the cut leaves an open object.
    let deep = json!({"label": "a", "children": [{"children": [{"children": [{"children": [{"label": "e"}]}]}]}]});
    assert!(validator(&schema).is_valid(&deep));
}

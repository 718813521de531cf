//! The gateway's `google.api.http` path templates: parsed from a contract,
//! matched against request paths (see meshwork_gateway::fuzzing).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meshwork_gateway::fuzzing::path_template(data));

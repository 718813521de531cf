//! Fuzz target `grpc_path`: arbitrary bytes into meshwork_proxy::fuzzing::grpc_path,
//! which holds the parse and the properties it checks (shared with the
//! stable-toolchain replay of the corpus).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meshwork_proxy::fuzzing::grpc_path(data));

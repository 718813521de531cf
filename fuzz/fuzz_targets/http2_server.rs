//! Fuzz target `http2_server`: arbitrary bytes into meshwork_proxy::fuzzing::http2_server,
//! which holds the parse and the properties it checks (shared with the
//! stable-toolchain replay of the corpus).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meshwork_proxy::fuzzing::http2_server(data));

//! Fuzz target `mesh_toml`: arbitrary bytes into meshwork_proxy::fuzzing::mesh_toml,
//! which holds the parse and the properties it checks (shared with the
//! stable-toolchain replay of the corpus).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meshwork_proxy::fuzzing::mesh_toml(data));

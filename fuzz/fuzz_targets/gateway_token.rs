//! Fuzz target `gateway_token`: arbitrary bytes as an `Authorization` header
//! value into meshwork_gateway::fuzzing::token, which holds the bearer parse,
//! the JWT header and claim checks and the properties they keep (shared with
//! the stable-toolchain replay of the corpus, gateway/tests/auth_fuzz_corpus.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meshwork_gateway::fuzzing::token(data));

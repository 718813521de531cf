//! A REST request's query and JSON body made into a request message (see
//! meshwork_gateway::fuzzing).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meshwork_gateway::fuzzing::rest_request(data));

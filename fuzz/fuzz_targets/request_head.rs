//! Request heads: bytes -> the router's parsing and normalization of host, path and
//! forwarded headers; see `wharf_router::fuzzing::check_request_head`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    wharf_router::fuzzing::check_request_head(data);
});

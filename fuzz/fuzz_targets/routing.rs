//! Routing: a random route table and requests; the lookup must agree with a naive
//! reference model; see `wharf_router::fuzzing::check_routing`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    wharf_router::fuzzing::check_routing(data);
});

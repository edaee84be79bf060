//! Directory::parse and Directory::parse_json on the same text.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ctid_proto::fuzzing::fuzz_directory(data));

//! CtiCodec and Request::parse on bytes cut at arbitrary points (ctid_proto::fuzzing::fuzz_cti).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ctid_proto::fuzzing::fuzz_cti(data));

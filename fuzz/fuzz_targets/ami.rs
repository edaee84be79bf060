//! AmiCodec on bytes cut at arbitrary points (input layout: ctid_proto::fuzzing::fuzz_ami).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ctid_proto::fuzzing::fuzz_ami(data));

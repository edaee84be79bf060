//! The call model on sequences of AMI events, AGI data, dispositions and directory changes
//! (ctid_proto::fuzzing::CallModelOp).
#![no_main]

use ctid_proto::fuzzing::fuzz_call_model;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_call_model(data));

//! The call model on sequences of AMI events, AGI data, dispositions and directory changes
//! (ctid_proto::fuzzing::CallModelOp). Known calls.rs bugs fail like any other unless
//! CTID_FUZZ_TOLERATE_KNOWN_BUGS is set, so that a campaign can look past them.
#![no_main]

use std::sync::OnceLock;

use ctid_proto::fuzzing::{fuzz_call_model, KnownBugs};

fn known() -> KnownBugs {
    static KNOWN: OnceLock<KnownBugs> = OnceLock::new();
    *KNOWN.get_or_init(|| match std::env::var_os("CTID_FUZZ_TOLERATE_KNOWN_BUGS") {
        Some(_) => KnownBugs::Tolerate,
        None => KnownBugs::Fail,
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_call_model(data, known()));

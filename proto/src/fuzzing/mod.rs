//! What the fuzz targets (`fuzz/`) and the property tests (`tests/properties.rs`) share:
//! how an input becomes a codec run or a sequence of call-model operations, and the
//! properties checked on the way. Every `check_*` and `fuzz_*` function panics when a
//! property fails. Built only with the `fuzzing` feature.

mod call_model;
mod codecs;

pub use call_model::{fuzz_call_model, ops_from_bytes, run_call_model, CallModelOp};
pub use codecs::{
    check_agi, check_ami, check_cti, check_directory, check_request, decode_in_chunks, fuzz_agi,
    fuzz_ami, fuzz_cti, fuzz_directory, Decoded,
};

//! Sans-IO core of ctid: wire codecs and the call model. Nothing here does I/O or knows
//! about actors, so all of it is unit-tested and fuzzable on its own.

pub mod agi;
pub mod ami;
pub mod calls;
pub mod cidr;
pub mod commands;
pub mod cti;
pub mod directory;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod lists;
pub mod rfc3339;
pub mod rights;
pub mod throttle;
pub mod wallboard;
pub mod wire;

//! The ctid daemon as a library: settings loading, start-up and the supervision tree, and
//! the `client` and `demo` commands. `main.rs` is the command line over it.

pub mod client;
#[cfg(feature = "demo")]
pub mod demo;
pub mod logging;
pub mod run;
pub mod settings;

/// sysexits' EX_CONFIG: the settings are wrong, restarting will not help.
pub const EXIT_CONFIG: u8 = 78;

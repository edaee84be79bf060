//! The actors of ctid. Each AMI connection, listening port, CTI session, context partition
//! and the store is an actor under the supervision tree of [`supervisor`]; protocol work is
//! delegated to the sans-IO `ctid-proto`.

pub mod ami;
pub mod net;
pub mod settings;
pub mod supervisor;
pub mod tls;

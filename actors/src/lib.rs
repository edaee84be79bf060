//! The actors of ctid. Each AMI connection, listening port, CTI session, context partition
//! and the store is an actor under the supervision tree of [`supervisor`]; password checks
//! run on threads of their own ([`pool`]); protocol work is delegated to the sans-IO
//! `ctid-proto`.

pub mod ami;
pub mod announce;
pub mod auth;
pub mod directory;
pub mod fagi;
pub mod info;
pub mod listener;
pub mod metrics;
pub mod net;
pub mod outbox;
pub mod partition;
pub mod pool;
pub mod router;
pub mod session;
pub mod settings;
pub mod store;
pub mod supervisor;
pub mod tls;
pub mod webi;

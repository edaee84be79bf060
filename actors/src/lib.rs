//! The actors of ctid. Each AMI connection, listening port, CTI session and context
//! partition is an actor under the supervision tree of [`supervisor`]; the store and the
//! password checks run on threads of their own ([`pool`], [`records`]); protocol work is
//! delegated to the sans-IO `ctid-proto`.

pub mod allow;
pub mod ami;
pub mod announce;
pub mod ask;
pub mod auth;
pub mod cluster;
pub mod command;
pub mod directory;
pub mod fagi;
pub mod health;
pub mod http;
pub mod info;
pub mod listener;
pub mod metrics;
pub mod net;
pub mod outbox;
pub mod partition;
pub mod pbx;
pub mod pool;
pub mod records;
pub mod router;
pub mod session;
pub mod settings;
pub mod store;
pub mod supervisor;
pub mod tls;
pub mod webi;

//! The call model: AMI events in, normalized call events out.
//!
//! - [`types`]: calls as clients see them, and the events about them;
//! - [`model`]: channels grouped into calls by Linkedid, event by event;
//! - [`resync`]: lists Asterisk gives on demand (CoreShowChannels, QueueStatus), applied
//!   where they were taken in the event stream.

mod model;
mod resync;
mod types;

pub use model::{CallModel, Channel};
pub use resync::Mark;
pub use types::*;

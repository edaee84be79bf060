//! The call model: AMI events in, normalized call events out.
//!
//! - [`types`]: calls as clients see them, and the events about them;
//! - [`model`]: channels grouped into calls by Linkedid, event by event;
//! - [`progress`]: what happens to a call (dials, answers, bridges, transfers, queues);
//! - [`data`]: what the dialplan attaches to calls, and dispositions;
//! - [`media`]: codecs and translation, from the `Status` Asterisk answers for a channel;
//! - [`resync`]: lists Asterisk gives on demand (CoreShowChannels, QueueStatus), applied
//!   where they were taken in the event stream.

mod data;
mod media;
mod model;
mod progress;
mod resync;
mod types;

pub use media::{known_codec, sample_rate, Media, SAMPLE_RATES};
pub use model::{CallModel, Channel};
pub use resync::Mark;
pub use types::*;

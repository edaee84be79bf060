//! Which channels the router asks Asterisk about (`Status`, for their codecs), and how many
//! at a time: a burst of answered calls queues its channels instead of filling the AMI
//! link's write queue, and a channel is asked about once at a time.

use std::collections::{HashMap, HashSet, VecDeque};

use crate::ami::ListTag;

/// `Status` answers awaited at once, at most.
const IN_FLIGHT: usize = 64;
/// Channels waiting to be asked about, at most; past it a channel's media stays unknown.
const WAITING: usize = 8192;

/// A channel to ask about: its Uniqueid and its name (what `Status` takes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Asked {
    pub uniqueid: String,
    pub name: String,
}

#[derive(Default)]
pub struct MediaAsks {
    in_flight: HashMap<ListTag, String>,
    waiting: VecDeque<Asked>,
    /// Uniqueids waiting or in flight.
    held: HashSet<String>,
}

impl MediaAsks {
    /// Queues a channel; false if the queue is full. A channel already waiting or asked
    /// about is not queued again.
    pub fn want(&mut self, channel: Asked) -> bool {
        if self.held.contains(&channel.uniqueid) {
            return true;
        }
        if self.waiting.len() >= WAITING {
            return false;
        }
        self.held.insert(channel.uniqueid.clone());
        self.waiting.push_back(channel);
        true
    }

    /// The channels to ask about now, each under a fresh tag from `tag`.
    pub fn next(&mut self, mut tag: impl FnMut() -> ListTag) -> Vec<(ListTag, Asked)> {
        let mut out = Vec::new();
        while self.in_flight.len() < IN_FLIGHT {
            let Some(channel) = self.waiting.pop_front() else {
                break;
            };
            let t = tag();
            self.in_flight.insert(t, channel.uniqueid.clone());
            out.push((t, channel));
        }
        out
    }

    /// List `tag` completed, failed or was never sent: the Uniqueid of its channel, if it
    /// was one of these.
    pub fn done(&mut self, tag: ListTag) -> Option<String> {
        let uid = self.in_flight.remove(&tag)?;
        self.held.remove(&uid);
        Some(uid)
    }

    /// The link went down: the channels waiting may be gone. Those in flight are answered
    /// (failed) by the link itself.
    pub fn forget_waiting(&mut self) {
        for channel in self.waiting.drain(..) {
            self.held.remove(&channel.uniqueid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chan(n: usize) -> Asked {
        Asked {
            uniqueid: format!("1.{n}"),
            name: format!("PJSIP/{n}-01"),
        }
    }

    #[test]
    fn a_burst_is_asked_about_a_bounded_number_at_a_time_each_channel_once() {
        let mut asks = MediaAsks::default();
        for n in 0..IN_FLIGHT + 10 {
            assert!(asks.want(chan(n)));
            assert!(asks.want(chan(n)), "a second want is a no-op");
        }
        let mut tags = 0;
        let first = asks.next(|| {
            tags += 1;
            tags
        });
        assert_eq!(first.len(), IN_FLIGHT);
        assert!(asks.next(|| unreachable!()).is_empty(), "the bound holds");
        assert!(asks.want(chan(0)), "in flight: not queued again");
        assert_eq!(asks.done(1).as_deref(), Some("1.0"));
        assert_eq!(asks.done(1), None, "once");
        let more = asks.next(|| 1000);
        assert_eq!(more, vec![(1000, chan(IN_FLIGHT))]);
        asks.forget_waiting();
        assert_eq!(asks.done(2).as_deref(), Some("1.1"));
        assert!(asks.next(|| 2000).is_empty(), "nothing waits any more");
    }

    #[test]
    fn the_queue_is_bounded() {
        let mut asks = MediaAsks::default();
        for n in 0..WAITING {
            assert!(asks.want(chan(n)));
        }
        assert!(!asks.want(chan(WAITING)));
    }
}

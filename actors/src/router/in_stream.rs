//! What the router asks Asterisk for in the event stream (the resync's lists, the Status of
//! answered channels), and how it applies the answers where they complete.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix::prelude::*;
use ctid_proto::ami::{AmiMessage, AmiPacket};
use ctid_proto::calls::{CallEvent, CallModel, EventKind, Mark};
use ctid_proto::directory::Directory;
use log::{debug, info, warn};

use super::Router;
use crate::ami::{AmiError, AmiRequest, ListTag};
use crate::ask::{ask, Unanswered};
use crate::media::Asked;

/// Tags of in-stream lists, unique across router restarts.
static NEXT_TAG: AtomicU64 = AtomicU64::new(1);

/// The first wait before a failed resync is asked for again, and the longest.
pub(super) const RESYNC_RETRY_MIN: Duration = Duration::from_secs(1);
const RESYNC_RETRY_MAX: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum List {
    Channels,
    Queues,
}

/// A resync under way: the lists it asked for, and where Asterisk took each.
pub(super) struct Resyncing {
    number: u64,
    pub(super) lists: HashMap<ListTag, (List, Option<Mark>)>,
}

impl Router {
    /// Queues the channels of the calls just answered or bridged for a `Status`, and asks.
    pub(super) fn ask_media(&mut self, events: &[CallEvent], ctx: &mut Context<Self>) {
        let up = events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Answered | EventKind::Bridged))
            .map(|e| e.call.id.as_str());
        self.ask_media_of(up, ctx);
    }

    /// Queues the channels of `calls` for a `Status`, and asks.
    pub(super) fn ask_media_of<'a>(
        &mut self,
        calls: impl IntoIterator<Item = &'a str>,
        ctx: &mut Context<Self>,
    ) {
        let mut full = false;
        for id in calls {
            for ch in self.model.channels_of(id) {
                full |= !self.media.want(Asked {
                    uniqueid: ch.uniqueid.clone(),
                    name: ch.name.clone(),
                });
            }
        }
        if full {
            debug!(
                "AMI {}: too many channels wait for their Status: media left unknown",
                self.pbx
            );
        }
        self.pump_media(ctx);
    }

    /// Sends the `Status` actions the bound allows, in the event stream.
    pub(super) fn pump_media(&mut self, ctx: &mut Context<Self>) {
        let Some(link) = self.link.get() else {
            return;
        };
        let asks = self.media.next(|| NEXT_TAG.fetch_add(1, Ordering::Relaxed));
        if asks.is_empty() {
            return;
        }
        let limit = self.resync_bound;
        let sending = async move {
            let mut unsent = Vec::new();
            for (tag, channel) in asks {
                let action = AmiPacket::action("Status").field("Channel", channel.name);
                let request = AmiRequest::in_stream(action, tag);
                if !matches!(ask(&link, request, limit).await, Ok(Ok(_))) {
                    unsent.push(tag);
                }
            }
            unsent
        };
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(sending).map(|unsent, act, ctx| {
                for tag in unsent {
                    act.media.done(tag);
                }
                act.pump_media(ctx);
            }),
        );
    }

    /// Applies the `Status` of channel `uid` where it completed in the stream.
    pub(super) fn media_done(
        &mut self,
        uid: &str,
        items: Result<Vec<AmiMessage>, AmiError>,
        now: f64,
    ) -> Vec<CallEvent> {
        let items = match items {
            Ok(items) => items,
            // Typically the channel hung up meanwhile ("No such channel").
            Err(e) => {
                debug!("AMI {}: Status of {uid}: {e}", self.pbx);
                return Vec::new();
            }
        };
        let unknown = |model: &CallModel| {
            model
                .call_of_channel(uid)
                .is_some_and(|c| c.media.is_none())
        };
        let was_unknown = unknown(&self.model);
        let events = self.model.apply_status(&items, now);
        if was_unknown && !unknown(&self.model) {
            if let Some(media) = self
                .model
                .call_of_channel(uid)
                .and_then(|c| c.media.as_ref())
            {
                self.metrics
                    .media(media.codec.as_deref(), media.transcoding);
            }
        }
        events
    }

    /// Asks Asterisk for its channels and queue entries, in the event stream.
    pub(super) fn resync(&mut self, ctx: &mut Context<Self>) {
        if self.resyncing.is_some() {
            return;
        }
        let Some(link) = self.link.get() else {
            return;
        };
        self.resyncs += 1;
        self.metrics.resync(&self.pbx);
        let number = self.resyncs;
        let tag = || NEXT_TAG.fetch_add(1, Ordering::Relaxed);
        let (channels, queues) = (tag(), tag());
        self.resyncing = Some(Resyncing {
            number,
            lists: HashMap::from([
                (channels, (List::Channels, None)),
                (queues, (List::Queues, None)),
            ]),
        });
        let limit = self.resync_bound;
        let asking = async move {
            let list = |action, tag| {
                let request = AmiRequest::in_stream(AmiPacket::action(action), tag);
                ask(&link, request, limit)
            };
            let sent = list("CoreShowChannels", channels).await;
            let queues_sent = list("QueueStatus", queues).await;
            (sent, queues_sent)
        };
        ctx.spawn(actix::fut::wrap_future::<_, Self>(asking).map(
            move |(sent, queues_sent), act, ctx| {
                let failed = |r: Result<Result<_, AmiError>, Unanswered>| match r {
                    Ok(Ok(_)) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(Unanswered::Late) => Some("the AMI link is busy".to_owned()),
                    Err(Unanswered::Gone) => Some("the AMI link stopped".to_owned()),
                };
                let Some(resync) = act.resyncing.as_mut().filter(|r| r.number == number) else {
                    return;
                };
                if let Some(why) = failed(sent) {
                    warn!("resync with Asterisk failed: {why}");
                    act.resyncing = None;
                    return act.resync_failed(ctx);
                }
                if let Some(why) = failed(queues_sent) {
                    debug!("resync: QueueStatus not sent: {why}");
                    resync.lists.remove(&queues);
                    // The channel list may have been applied already.
                    if resync.lists.is_empty() {
                        act.resync_done();
                        act.resynced(ctx);
                    }
                }
            },
        ));
        ctx.run_later(self.resync_bound, move |act, ctx| {
            if act.resyncing.as_ref().is_some_and(|r| r.number == number) {
                warn!(
                    "resync with Asterisk abandoned: its lists did not come back within {}",
                    crate::settings::human_duration(act.resync_bound)
                );
                act.resyncing = None;
                act.resync_failed(ctx);
            }
        });
    }

    /// A resync failed or was abandoned: until one completes, the link's calls are not
    /// confirmed and it is not up, so another is asked for after a growing wait.
    fn resync_failed(&mut self, ctx: &mut Context<Self>) {
        let wait = self.resync_retry;
        self.resync_retry = (wait * 2).min(RESYNC_RETRY_MAX);
        debug!(
            "AMI {}: resyncing again in {}",
            self.pbx,
            crate::settings::human_duration(wait)
        );
        ctx.run_later(wait, |act, ctx| act.resync(ctx));
    }

    /// The resync under way has applied its lists.
    fn resync_done(&mut self) {
        self.resyncing = None;
        self.resync_retry = RESYNC_RETRY_MIN;
        info!(
            "AMI {}: resynced with Asterisk: {} live channels in {} calls",
            self.pbx,
            self.model.channel_count(),
            self.model.calls().count()
        );
    }

    /// Applies a list of the resync under way where it completed in the stream; and whether
    /// that completed the resync (a failed or abandoned one never does).
    pub(super) fn list_done(
        &mut self,
        tag: ListTag,
        items: Result<Vec<AmiMessage>, AmiError>,
        now: f64,
        dir: &Directory,
        ctx: &mut Context<Self>,
    ) -> (Vec<CallEvent>, bool) {
        let Some(resync) = self.resyncing.as_mut() else {
            return (Vec::new(), false);
        };
        let Some((list, taken)) = resync.lists.remove(&tag) else {
            return (Vec::new(), false);
        };
        let done = resync.lists.is_empty();
        let taken = taken.unwrap_or_else(|| self.model.mark());
        let events = match (list, items) {
            (List::Channels, Ok(live)) => self.model.resync_channels(taken, &live, now, dir),
            (List::Queues, Ok(waiting)) => self.model.resync_queues(taken, &waiting, now, dir),
            (List::Channels, Err(e)) => {
                warn!("resync with Asterisk failed: CoreShowChannels: {e}");
                self.resyncing = None;
                self.resync_failed(ctx);
                return (Vec::new(), false);
            }
            // Without queue data (an Asterisk without app_queue), calls are still resynced.
            (List::Queues, Err(e)) => {
                debug!("resync: QueueStatus failed: {e}");
                Vec::new()
            }
        };
        if done {
            self.resync_done();
        }
        (events, done)
    }
}

//! Where to reach a supervised actor across its restarts: its [`Slot`] (the live address),
//! and [`Outlet`]s that send to whichever instance is live.

use std::sync::Arc;

use actix::dev::ToEnvelope;
use actix::prelude::*;
use tokio::sync::watch;

/// The live address of a supervised actor, updated on every restart.
pub struct Slot<A: Actor>(Arc<watch::Sender<Option<Addr<A>>>>);

impl<A: Actor> Clone for Slot<A> {
    fn clone(&self) -> Self {
        Slot(self.0.clone())
    }
}

impl<A: Actor> Default for Slot<A> {
    fn default() -> Self {
        Slot(Arc::new(watch::channel(None).0))
    }
}

impl<A: Actor> Slot<A> {
    pub fn new() -> Self {
        Self::default()
    }

    /// The current address, if the actor is running.
    pub fn get(&self) -> Option<Addr<A>> {
        self.0.borrow().clone().filter(Addr::connected)
    }

    pub(super) fn set(&self, addr: Option<Addr<A>>) {
        self.0.send_replace(addr);
    }

    /// Clears the slot if it still holds `addr` (a newer instance may already be there).
    pub(super) fn clear_if(&self, addr: &Addr<A>) {
        self.0.send_if_modified(|cur| match cur {
            Some(a) if a == addr => {
                *cur = None;
                true
            }
            _ => false,
        });
    }

    /// Waits until the slot holds a running actor other than `old` and returns it.
    pub async fn next_after(&self, old: Option<&Addr<A>>) -> Addr<A> {
        let mut rx = self.0.subscribe();
        loop {
            if let Some(addr) = rx.borrow_and_update().clone().filter(Addr::connected) {
                if Some(&addr) != old {
                    return addr;
                }
            }
            if rx.changed().await.is_err() {
                // The sender lives in `self`, so it cannot be gone while we borrow it.
                std::future::pending::<()>().await;
            }
        }
    }

    /// A recipient view of this slot for message type `M`.
    pub fn outlet<M>(&self) -> Outlet<M>
    where
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
        M: Message + Send + 'static,
        M::Result: Send,
    {
        let slot = self.clone();
        Outlet::from_source(Arc::new(move || slot.get().map(|a| a.recipient())))
    }
}

type Source<M> = Arc<dyn Fn() -> Option<Recipient<M>> + Send + Sync>;

/// Where an actor sends one kind of message: whichever instance of a supervised actor is
/// live at the time, or nowhere.
///
/// The recipient is kept between sends and only looked up again once it has closed: actix's
/// `try_send` always queues the message and then parks the *sending handle* when the
/// mailbox is over capacity, so only a reused handle ever sees `Full`. A fresh handle per
/// send would make every mailbox unbounded.
pub struct Outlet<M: Message + Send>
where
    M::Result: Send,
{
    source: Option<Source<M>>,
    cached: Option<Recipient<M>>,
}

impl<M: Message + Send> Clone for Outlet<M>
where
    M::Result: Send,
{
    fn clone(&self) -> Self {
        Outlet {
            source: self.source.clone(),
            cached: None,
        }
    }
}

impl<M: Message + Send + 'static> Outlet<M>
where
    M::Result: Send,
{
    /// An outlet that drops every message.
    pub fn none() -> Self {
        Outlet {
            source: None,
            cached: None,
        }
    }

    /// An outlet to one fixed recipient.
    pub fn to(recipient: Recipient<M>) -> Self {
        Outlet {
            source: Some(Arc::new(move || Some(recipient.clone()))),
            cached: None,
        }
    }

    fn from_source(source: Source<M>) -> Self {
        Outlet {
            source: Some(source),
            cached: None,
        }
    }

    pub fn is_none(&self) -> bool {
        self.source.is_none()
    }

    /// The live recipient, if any.
    pub fn get(&mut self) -> Option<&Recipient<M>> {
        if !self.cached.as_ref().is_some_and(Recipient::connected) {
            self.cached = self.source.as_ref().and_then(|f| f());
        }
        self.cached.as_ref()
    }

    /// Sends without waiting: `Full` when the recipient's mailbox is over capacity,
    /// `Closed` when there is no live recipient.
    pub fn try_send(&mut self, msg: M) -> Result<(), SendError<M>> {
        match self.get() {
            Some(r) => r.try_send(msg),
            None => Err(SendError::Closed(msg)),
        }
    }
}

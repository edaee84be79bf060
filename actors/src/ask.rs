//! Waiting on another actor, never forever: an actor a mailbox behind, or stalled, makes
//! its askers give up after a bound instead of holding them.

use std::time::Duration;

use actix::dev::ToEnvelope;
use actix::prelude::*;

/// Why an actor asked did not answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unanswered {
    /// It did not answer within the bound.
    Late,
    /// It stopped (or is restarting).
    Gone,
}

/// Sends `msg` to `addr` and waits for its answer at most `limit`.
pub async fn ask<A, M>(addr: &Addr<A>, msg: M, limit: Duration) -> Result<M::Result, Unanswered>
where
    A: Handler<M>,
    A::Context: ToEnvelope<A, M>,
    M: Message + Send + 'static,
    M::Result: Send,
{
    match tokio::time::timeout(limit, addr.send(msg)).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(_)) => Err(Unanswered::Gone),
        Err(_) => Err(Unanswered::Late),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks its own thread for as long as it is told.
    struct Stuck;

    impl Actor for Stuck {
        type Context = Context<Self>;
    }

    #[derive(Message)]
    #[rtype(result = "u8")]
    struct Stall(Duration);

    impl Handler<Stall> for Stuck {
        type Result = u8;
        fn handle(&mut self, Stall(d): Stall, _: &mut Context<Self>) -> u8 {
            std::thread::sleep(d);
            7
        }
    }

    #[actix_rt::test]
    async fn a_stalled_actor_is_given_up_and_a_prompt_one_answers() {
        let thread = Arbiter::new();
        let stuck = Stuck::start_in_arbiter(&thread.handle(), |_| Stuck);
        let short = Duration::from_millis(50);
        assert_eq!(ask(&stuck, Stall(Duration::ZERO), short * 20).await, Ok(7));
        stuck.do_send(Stall(Duration::from_millis(500)));
        assert_eq!(
            ask(&stuck, Stall(Duration::ZERO), short).await,
            Err(Unanswered::Late)
        );
        thread.stop();
        thread.join().unwrap();
        assert_eq!(
            ask(&stuck, Stall(Duration::ZERO), short).await,
            Err(Unanswered::Gone)
        );
    }
}

//! Logging in to Asterisk once connected: its banner, the MD5 challenge or a plain login,
//! then Pings to keep the link alive.

use actix::prelude::*;
use ctid_proto::ami::actions::AmiReply;
use ctid_proto::ami::{AmiPacket, BANNER_PREFIX};
use log::{debug, info, Level};

use super::{AmiLink, LinkState, Phase, Purpose};
use crate::settings::AmiAuth;

impl AmiLink {
    fn set_phase(&mut self, phase: Phase) {
        if let Some(conn) = &mut self.conn {
            conn.phase = phase;
        }
    }

    pub(super) fn on_banner(&mut self, banner: String, ctx: &mut Context<Self>) {
        if !banner.starts_with(BANNER_PREFIX) {
            let generation = self.generation;
            self.lost(
                generation,
                format!("is not an AMI server (it greeted {banner:?})"),
                ctx,
            );
            return;
        }
        debug!("AMI {}: {banner}", self.name);
        // A placeholder never reaches Asterisk (start-up logged why, with the key); the
        // link still shows whether Asterisk can be reached.
        if self.cfg.settings.secret.is_placeholder() {
            let generation = self.generation;
            let why = "reached, not logging in: its secret is a placeholder".into();
            self.lost(generation, why, ctx);
            return;
        }
        let s = self.cfg.settings.clone();
        match s.auth {
            AmiAuth::Md5 => {
                self.set_phase(Phase::Challenge);
                let packet = AmiPacket::action("Challenge").field("AuthType", "MD5");
                self.send_own(packet, Purpose::Challenge, ctx);
            }
            AmiAuth::Plain => {
                self.set_phase(Phase::Login);
                let packet = AmiPacket::action("Login")
                    .field("Username", s.username.clone())
                    .field("Secret", s.secret.expose());
                self.send_own(packet, Purpose::Login, ctx);
            }
        }
    }

    pub(super) fn on_challenge(&mut self, reply: AmiReply, ctx: &mut Context<Self>) {
        let challenge = reply
            .response
            .as_ref()
            .and_then(|r| r.get("Challenge"))
            .map(str::to_owned);
        match (reply.outcome(), challenge) {
            (Ok(()), Some(challenge)) => {
                self.set_phase(Phase::Login);
                let s = &self.cfg.settings;
                let packet = AmiPacket::action("Login")
                    .field("AuthType", "MD5")
                    .field("Username", s.username.clone())
                    .field(
                        "Key",
                        ctid_proto::ami::md5_key(&challenge, s.secret.expose()),
                    );
                self.send_own(packet, Purpose::Login, ctx);
            }
            (outcome, _) => {
                let why = outcome
                    .err()
                    .unwrap_or_else(|| "no challenge in the answer".into());
                self.rejected(format!("refused the MD5 challenge ({why})"), ctx);
            }
        }
    }

    pub(super) fn on_login(&mut self, reply: AmiReply, ctx: &mut Context<Self>) {
        if let Err(why) = reply.outcome() {
            let user = self.cfg.settings.username.clone();
            self.rejected(format!("login as '{user}' rejected ({why})"), ctx);
            return;
        }
        self.set_phase(Phase::Up);
        self.failures = 0;
        self.stats.lock().logins += 1;
        info!(
            "AMI {}: logged in as '{}'",
            self.name, self.cfg.settings.username
        );
        self.publish(LinkState::Up);
        let interval = self.cfg.settings.ping_interval;
        if !interval.is_zero() {
            self.ping = Some(ctx.run_interval(interval, |act, ctx| act.keepalive(ctx)));
        }
    }

    /// Authentication failed: one error line, then the usual backoff.
    fn rejected(&mut self, reason: String, ctx: &mut Context<Self>) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        ctx.cancel_future(conn.reader);
        self.retry(reason, Level::Error, ctx);
    }

    fn keepalive(&mut self, ctx: &mut Context<Self>) {
        if self.actions.any(|p| matches!(p.purpose, Purpose::Ping)) {
            return;
        }
        self.send_own(AmiPacket::action("Ping"), Purpose::Ping, ctx);
    }
}

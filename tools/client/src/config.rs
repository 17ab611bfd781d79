//! The connection destination parameter: the ordered server list (default first, then
//! backups) and the options that govern polling, timeouts, switching and failback.

use std::time::Duration;

use crate::error::{Error, Result};

/// Who decides to move to another server when the current one goes down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SwitchMode {
    /// The client switches by itself to the next running server (and, if
    /// [`ClientConfig::failback`] is set, back to a preferred server once it runs again).
    #[default]
    Automatic,
    /// As in the patent, the application decides: once the current server is down every
    /// call fails with [`Error::ServerDown`] until the application calls
    /// [`crate::Client::switch`].
    Manual,
}

/// Where and how to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Servers as `host:port`, in order of preference: the default server first, then the
    /// backups.
    pub servers: Vec<String>,
    /// Password sent with AUTH after the state check (the server's `requirepass`).
    /// Default none.
    pub password: Option<String>,
    /// How often the client re-reads its server's state. The check runs before a command
    /// when this much time has passed since the last one (there is no background thread),
    /// so an idle client notices a change at its next command. Default 1 s.
    pub poll_interval: Duration,
    /// Bound on each TCP connect. Default 1 s.
    pub connect_timeout: Duration,
    /// Bound on each read and write; a write whose reply does not arrive in time is
    /// reported as [`Error::OutcomeUnknown`]. Default 5 s.
    pub read_timeout: Duration,
    /// Automatic (default) or manual switching.
    pub switch_mode: SwitchMode,
    /// In automatic mode, move back to a more preferred server (the default first) as soon
    /// as a poll finds it usable again. Default off: without it the client stays where it
    /// is until that server goes down.
    pub failback: bool,
    /// Session tokens (default on): every SET, MSET, DEL and EXEC carries a `DUPLEX.TOKEN`
    /// in the same pipeline, and after a switch (failover or failback) the client sends
    /// `DUPLEX.WAIT` for its own writes before its first command there, so it reads its own
    /// writes on the new server. See the crate docs.
    pub session_tokens: bool,
    /// How long the new server may wait for the client's own writes to arrive from their
    /// origin after a switch. Default 2 s; at most half of `read_timeout` is asked for (the
    /// server answers only when the wait ends, and that answer must arrive in time).
    pub token_wait: Duration,
    /// When the client's own writes have not reached the new server within
    /// `token_wait`: `false` (default) fails the call with [`Error::OwnWritesNotVisible`]
    /// (nothing sent; the next call waits again); `true` records an
    /// [`crate::Event::OwnWritesNotVisible`] and goes on (reads may miss those writes).
    pub token_timeout_proceeds: bool,
}

impl ClientConfig {
    /// A configuration with the given servers (default first) and every option at its
    /// default.
    pub fn new<I, S>(servers: I) -> ClientConfig
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ClientConfig {
            servers: servers.into_iter().map(Into::into).collect(),
            password: None,
            poll_interval: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(5),
            switch_mode: SwitchMode::Automatic,
            failback: false,
            session_tokens: true,
            token_wait: Duration::from_secs(2),
            token_timeout_proceeds: false,
        }
    }

    /// Turns session tokens on or off.
    pub fn session_tokens(mut self, on: bool) -> ClientConfig {
        self.session_tokens = on;
        self
    }

    /// Sets how long a new server may wait for the client's own writes after a switch.
    pub fn token_wait(mut self, d: Duration) -> ClientConfig {
        self.token_wait = d;
        self
    }

    /// Whether to go on (with an event) when the client's own writes are not visible on
    /// the new server in time, instead of failing the call.
    pub fn token_timeout_proceeds(mut self, on: bool) -> ClientConfig {
        self.token_timeout_proceeds = on;
        self
    }

    /// The wait asked of a server by `DUPLEX.WAIT`: `token_wait`, at most half of
    /// `read_timeout`.
    pub fn effective_token_wait(&self) -> Duration {
        self.token_wait.min(self.read_timeout / 2)
    }

    /// Sets the password.
    pub fn password(mut self, p: impl Into<String>) -> ClientConfig {
        self.password = Some(p.into());
        self
    }

    /// Sets the state poll interval.
    pub fn poll_interval(mut self, d: Duration) -> ClientConfig {
        self.poll_interval = d;
        self
    }

    /// Sets the connect timeout.
    pub fn connect_timeout(mut self, d: Duration) -> ClientConfig {
        self.connect_timeout = d;
        self
    }

    /// Sets the read/write timeout.
    pub fn read_timeout(mut self, d: Duration) -> ClientConfig {
        self.read_timeout = d;
        self
    }

    /// Sets the switch mode.
    pub fn switch_mode(mut self, m: SwitchMode) -> ClientConfig {
        self.switch_mode = m;
        self
    }

    /// Turns failback on or off.
    pub fn failback(mut self, on: bool) -> ClientConfig {
        self.failback = on;
        self
    }

    /// Checks the configuration.
    pub fn validate(&self) -> Result<()> {
        if self.servers.is_empty() {
            return Err(Error::Config(
                "the server list is empty: give the default server first, then the backups".into(),
            ));
        }
        for s in &self.servers {
            let port_ok = s
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
            if !port_ok {
                return Err(Error::Config(format!(
                    "server address '{s}' is not host:port (e.g. 127.0.0.1:7379)"
                )));
            }
        }
        for (i, s) in self.servers.iter().enumerate() {
            if self.servers[..i].contains(s) {
                return Err(Error::Config(format!("server {s} is listed twice")));
            }
        }
        for (name, d) in [
            ("poll_interval", self.poll_interval),
            ("connect_timeout", self.connect_timeout),
            ("read_timeout", self.read_timeout),
        ] {
            if d.is_zero() {
                return Err(Error::Config(format!("{name} must be more than zero")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        assert!(ClientConfig::new(["127.0.0.1:7379", "[::1]:7380"])
            .validate()
            .is_ok());
        assert!(ClientConfig::new(Vec::<String>::new()).validate().is_err());
        assert!(ClientConfig::new(["localhost"]).validate().is_err());
        assert!(ClientConfig::new(["h:0"]).validate().is_err());
        assert!(ClientConfig::new(["h:1", "h:1"]).validate().is_err());
        assert!(ClientConfig::new(["h:1"])
            .poll_interval(Duration::ZERO)
            .validate()
            .is_err());
        assert_eq!(
            ClientConfig::new(["h:1"])
                .token_wait(Duration::from_secs(5))
                .effective_token_wait(),
            Duration::from_millis(2500),
            "half the read timeout at most"
        );
        assert_eq!(
            ClientConfig::new(["h:1"]).effective_token_wait(),
            Duration::from_secs(2)
        );
    }
}

//! The room password (`--password-file`), like an IRC server's `PASS`.
//!
//! With a password set, a new connection is not yet a user: the session (see
//! `session.rs`) sends it `password required: send pass|PASSWORD` and lets it into the room
//! only after `pass|PASSWORD` or a JSON hello carrying `"password"`. This module holds what
//! that needs besides the session's own state: the password, compared in constant time, and
//! the [`Gate`] that limits wrong tries per IP address across connections, so that opening
//! new connections does not buy an attacker more guesses.

use crate::telemetry;
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A connection gets this many tries; the last wrong one closes it.
pub const MAX_TRIES: u32 = 3;

/// The line a connection gets first when the room has a password.
pub const PASSWORD_REQUIRED: &str = "password required: send pass|PASSWORD";

/// The room's password. Never printed: its `Debug` says only that it is set.
#[derive(Clone)]
pub struct Password(Arc<[u8]>);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(..)")
    }
}

impl Password {
    /// A password from its text; empty is refused (it would let anyone in while looking
    /// locked).
    pub fn new(text: &str) -> anyhow::Result<Password> {
        anyhow::ensure!(!text.is_empty(), "the password is empty");
        anyhow::ensure!(
            !text.contains(['\n', '\r']),
            "the password spans more than one line"
        );
        Ok(Password(text.as_bytes().into()))
    }

    /// Reads the password from a file: its whole content, UTF-8, less one trailing newline
    /// (`\n` or `\r\n`), which editors and `echo` add and which is not part of it.
    pub fn from_file(path: &Path) -> anyhow::Result<Password> {
        use anyhow::Context;
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read the password file {}", path.display()))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| anyhow::anyhow!("the password file {} is not UTF-8", path.display()))?;
        let text = text.strip_suffix('\n').unwrap_or(&text);
        let text = text.strip_suffix('\r').unwrap_or(text);
        Password::new(text).with_context(|| format!("in the password file {}", path.display()))
    }

    /// Whether `attempt` is the password. Takes the same time whatever the attempt has in
    /// common with the password: every byte of the attempt is compared, and lengths are
    /// compared as one more difference, with no early exit.
    pub fn matches(&self, attempt: &[u8]) -> bool {
        let secret = &self.0;
        let mut diff = u8::from(attempt.len() != secret.len());
        for (i, &byte) in attempt.iter().enumerate() {
            // Reads a byte of the secret for every byte of the attempt, in range or not.
            let expected = secret.get(i % secret.len()).copied().unwrap_or(0);
            diff |= std::hint::black_box(byte ^ expected);
        }
        std::hint::black_box(diff) == 0
    }
}

/// What a try was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Right,
    Wrong,
    /// Too many wrong tries from this address lately: not even checked.
    Blocked,
}

/// Wrong tries from one address in the current window.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    since: Instant,
}

/// Checks tries against the password and limits wrong ones per IP address: at most
/// `per_ip` in each `window`. Shared by every connection.
#[derive(Debug)]
pub struct Gate {
    password: Password,
    per_ip: u32,
    window: Duration,
    failures: Mutex<HashMap<IpAddr, Failures>>,
}

/// Past this many addresses in the table, expired ones are swept out on the next failure,
/// so a scan from many addresses cannot grow it without bound.
const SWEEP_ABOVE: usize = 4096;

impl Gate {
    /// `per_ip == 0`: no limit per address.
    pub fn new(password: Password, per_ip: u32, window: Duration) -> Gate {
        Gate {
            password,
            per_ip,
            window,
            failures: Mutex::default(),
        }
    }

    /// Judges one try from `ip`. A wrong one is counted, in the metrics too.
    pub fn check(&self, ip: IpAddr, attempt: &str) -> Verdict {
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let current = failures
            .get(&ip)
            .filter(|f| now.duration_since(f.since) < self.window)
            .copied();
        if self.per_ip != 0 && current.is_some_and(|f| f.count >= self.per_ip) {
            telemetry::counters().auth_failures.increment(1);
            return Verdict::Blocked;
        }
        if self.password.matches(attempt.as_bytes()) {
            return Verdict::Right;
        }
        telemetry::counters().auth_failures.increment(1);
        if self.per_ip != 0 {
            if failures.len() > SWEEP_ABOVE {
                failures.retain(|_, f| now.duration_since(f.since) < self.window);
            }
            let entry = current.unwrap_or(Failures {
                count: 0,
                since: now,
            });
            failures.insert(
                ip,
                Failures {
                    count: entry.count + 1,
                    since: entry.since,
                },
            );
        }
        Verdict::Wrong
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_only_the_password() {
        let password = Password::new("hunter2").expect("password");
        assert!(password.matches(b"hunter2"));
        for wrong in ["", "hunter", "hunter22", "Hunter2", "hunter2\n", "xhunter2"] {
            assert!(!password.matches(wrong.as_bytes()), "{wrong:?}");
        }
        // An attempt that repeats the password is not it either.
        assert!(!password.matches(b"hunter2hunter2"));
    }

    #[test]
    fn a_file_loses_one_trailing_newline_and_nothing_else() {
        let dir = std::env::temp_dir().join(format!("chat-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("password");
        for (content, password) in [
            ("s3cret\n", "s3cret"),
            ("s3cret", "s3cret"),
            ("s3cret\r\n", "s3cret"),
            (" s3 cret \n", " s3 cret "),
        ] {
            std::fs::write(&file, content).expect("write");
            let read = Password::from_file(&file).expect("read");
            assert!(read.matches(password.as_bytes()), "{content:?}");
        }
        for bad in ["", "\n", "two\nlines\n"] {
            std::fs::write(&file, bad).expect("write");
            assert!(Password::from_file(&file).is_err(), "{bad:?}");
        }
        assert!(Password::from_file(&dir.join("missing")).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn wrong_tries_per_address_are_limited_within_the_window() {
        let gate = Gate::new(
            Password::new("right").expect("password"),
            2,
            Duration::from_secs(3600),
        );
        let (a, b): (IpAddr, IpAddr) = (
            "10.0.0.1".parse().expect("ip"),
            "10.0.0.2".parse().expect("ip"),
        );
        assert_eq!(gate.check(a, "right"), Verdict::Right);
        assert_eq!(gate.check(a, "wrong"), Verdict::Wrong);
        assert_eq!(gate.check(a, "wrong"), Verdict::Wrong);
        // Even the right password is not checked now...
        assert_eq!(gate.check(a, "right"), Verdict::Blocked);
        // ...but another address is not affected.
        assert_eq!(gate.check(b, "right"), Verdict::Right);

        let quick = Gate::new(Password::new("right").expect("password"), 1, Duration::ZERO);
        assert_eq!(quick.check(a, "wrong"), Verdict::Wrong);
        // The window is over at once: the next try counts afresh.
        assert_eq!(quick.check(a, "right"), Verdict::Right);
    }
}

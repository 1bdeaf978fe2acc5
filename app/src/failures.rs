//! Failed logins: the policy that slows password guessing down, and the in-process
//! counters it falls back to without Redis. A leaf, held by `AppState`; `lockout.rs`
//! applies it to a login.
//!
//! Failures are counted twice: per account and client, and per account alone.
//! - A client that fails [`FREE_FAILURES`] times for one account must wait before its
//!   next attempt for that account, one second, doubling with each further failure up
//!   to [`LONGEST_WAIT`]. Its right password is refused too while it waits, so waiting
//!   is the only way on. A success clears the count.
//! - An account that fails [`ACCOUNT_ALARM`] times from any clients is under attack
//!   from many addresses: it then takes one attempt a second from all clients together.
//!   That slows the attack to a crawl without locking the owner out: their attempt
//!   waits a second at most.
//!
//! Counts are forgotten [`WINDOW`] after the last failure.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures per account and client before the client must wait.
pub const FREE_FAILURES: u32 = 5;
/// The longest a client waits between attempts for one account.
pub const LONGEST_WAIT: Duration = Duration::from_secs(15 * 60);
/// Failures of one account, from any clients, after which it takes one attempt a second.
pub const ACCOUNT_ALARM: u32 = 20;
/// How long a count lasts after its last failure.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);

/// How long a client that failed `failures` times, the last `since_last` ago, must
/// still wait before it may try again.
pub fn wait(failures: u32, since_last: Duration) -> Option<Duration> {
    let beyond = failures.checked_sub(FREE_FAILURES)?;
    let lock = Duration::from_secs(1u64.checked_shl(beyond).unwrap_or(u64::MAX)).min(LONGEST_WAIT);
    lock.checked_sub(since_last).filter(|left| !left.is_zero())
}

/// The counts of one account and client pair, and of the account, as the policy reads them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub pair: u32,
    pub pair_since_last: Duration,
    pub account: u32,
}

/// Failure counts kept in this process, by key: what the policy uses without Redis.
#[derive(Default)]
pub struct LocalFailures {
    counts: Mutex<HashMap<String, (u32, Instant)>>,
}

impl LocalFailures {
    /// The counts for `pair` and `account`, after recording one more failure of each
    /// when `failed`.
    pub fn counts(&self, pair: &str, account: &str, failed: bool) -> Counts {
        let now = Instant::now();
        let mut map = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > 100_000 {
            map.retain(|_, (_, last)| now.duration_since(*last) < WINDOW);
        }
        let mut read = |key: &str| {
            let entry = map.get(key).copied().filter(|(_, last)| now.duration_since(*last) < WINDOW);
            let (n, last) = match (entry, failed) {
                (Some((n, _)), true) => (n + 1, now),
                (None, true) => (1, now),
                (Some(e), false) => e,
                (None, false) => return (0, Duration::ZERO),
            };
            if failed {
                map.insert(key.to_owned(), (n, last));
            }
            (n, now.duration_since(last))
        };
        let (pair_n, pair_since_last) = read(pair);
        let (account_n, _) = read(account);
        Counts { pair: pair_n, pair_since_last, account: account_n }
    }

    /// Forgets `pair`'s failures (a success).
    pub fn clear(&self, pair: &str) {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).remove(pair);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_starts_after_the_free_failures_and_doubles_up_to_the_longest() {
        let s = Duration::from_secs;
        assert_eq!(wait(FREE_FAILURES - 1, s(0)), None);
        assert_eq!(wait(FREE_FAILURES, s(0)), Some(s(1)));
        assert_eq!(wait(FREE_FAILURES + 3, s(0)), Some(s(8)));
        assert_eq!(wait(FREE_FAILURES + 3, s(5)), Some(s(3)), "the time since the last failure counts");
        assert_eq!(wait(FREE_FAILURES + 3, s(8)), None);
        assert_eq!(wait(FREE_FAILURES + 40, s(0)), Some(LONGEST_WAIT));
        assert_eq!(wait(u32::MAX, s(0)), Some(LONGEST_WAIT));
    }

    #[test]
    fn local_counts_grow_per_pair_and_per_account_and_a_success_clears_the_pair() {
        let f = LocalFailures::default();
        assert_eq!(f.counts("a|1", "a", false), Counts::default());
        f.counts("a|1", "a", true);
        f.counts("a|2", "a", true);
        let c = f.counts("a|1", "a", true);
        assert_eq!((c.pair, c.account), (2, 3));
        f.clear("a|1");
        let c = f.counts("a|1", "a", false);
        assert_eq!((c.pair, c.account), (0, 3), "the account's count stays");
    }
}

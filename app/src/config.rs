//! Runtime settings of the service (what `shop serve` parses from flags and env) and
//! the small parsed values in them: route roles and rate-limit specs.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::db::Pooler;

/// A group of routes a process serves; `all` expands to every group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Auth,
    Catalog,
    Cart,
    Orders,
    Flash,
}

impl Role {
    pub const ALL: [Role; 5] = [Role::Auth, Role::Catalog, Role::Cart, Role::Orders, Role::Flash];

    /// The name `--roles` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Auth => "auth",
            Role::Catalog => "catalog",
            Role::Cart => "cart",
            Role::Orders => "orders",
            Role::Flash => "flash",
        }
    }
}

/// The set of route groups a process serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Roles(BTreeSet<Role>);

impl Roles {
    pub fn all() -> Self {
        Roles(Role::ALL.into_iter().collect())
    }
    pub fn contains(&self, role: Role) -> bool {
        self.0.contains(&role)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown role `{0}` (expected auth, catalog, cart, orders, flash or all)")]
pub struct ParseRolesError(String);

impl FromStr for Roles {
    type Err = ParseRolesError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut set = BTreeSet::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "all" => set.extend(Role::ALL),
                name => match Role::ALL.into_iter().find(|r| r.as_str() == name) {
                    Some(role) => _ = set.insert(role),
                    None => return Err(ParseRolesError(name.to_owned())),
                },
            }
        }
        if set.is_empty() {
            return Err(ParseRolesError(s.to_owned()));
        }
        Ok(Roles(set))
    }
}

/// A token-bucket rate: `rate:burst` (tokens per second, bucket size), or `0` for off.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateSpec {
    pub per_second: f64,
    pub burst: f64,
}

impl RateSpec {
    pub const DISABLED: RateSpec = RateSpec { per_second: 0.0, burst: 0.0 };
    pub fn is_enabled(&self) -> bool {
        self.per_second > 0.0
    }
}

impl Default for RateSpec {
    /// Generous enough that normal traffic and tests never see a 429.
    fn default() -> Self {
        RateSpec { per_second: 50.0, burst: 100.0 }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid rate `{0}` (expected `rate:burst`, e.g. `10:20`, or `0` to disable)")]
pub struct ParseRateError(String);

impl FromStr for RateSpec {
    type Err = ParseRateError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseRateError(s.to_owned());
        let s = s.trim();
        if s == "0" || s == "off" {
            return Ok(RateSpec::DISABLED);
        }
        let (rate, burst) = match s.split_once(':') {
            Some((r, b)) => (r.trim().parse::<f64>().map_err(|_| err())?, b.trim().parse::<f64>().map_err(|_| err())?),
            None => {
                let r = s.parse::<f64>().map_err(|_| err())?;
                (r, r)
            }
        };
        if !(rate.is_finite() && burst.is_finite()) || rate < 0.0 || burst < 1.0 && rate > 0.0 {
            return Err(err());
        }
        if rate == 0.0 {
            return Ok(RateSpec::DISABLED);
        }
        Ok(RateSpec { per_second: rate, burst })
    }
}

impl fmt::Display for RateSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_enabled() { write!(f, "{}:{}", self.per_second, self.burst) } else { f.write_str("0") }
    }
}

/// Per-route-group rate limits.
#[derive(Clone, Copy, Debug, Default)]
pub struct RateLimits {
    pub login: RateSpec,
    pub register: RateSpec,
    pub search: RateSpec,
}

/// Everything `AppState::connect` needs.
#[derive(Clone, Debug)]
pub struct Settings {
    pub database_url: String,
    pub read_database_url: Option<String>,
    pub redis_url: Option<String>,
    /// Prefix of every Redis key, so several environments (or tests) can share a Redis.
    pub redis_prefix: String,
    /// Redis Sentinels (`host:port`) that say where the primary is after a failover;
    /// empty when none watches Redis.
    pub redis_sentinels: Vec<String>,
    /// The name the Sentinels know the primary by.
    pub redis_sentinel_master: String,
    pub db_pool_size: u32,
    /// What sits between the shop and PostgreSQL (see [`crate::db`]).
    pub db_pooler: Pooler,
    /// The route groups this process serves.
    pub roles: Roles,
    pub token_ttl: Duration,
    /// How long this process trusts a session it looked up without asking the database
    /// again (never past the session's own expiry); zero asks on every request.
    pub session_cache: Duration,
    /// How long Redis keeps a session for every instance (never past its expiry), so
    /// a token this instance has not seen costs a Redis read, not a database query.
    /// Zero keeps sessions out of Redis.
    pub session_share: Duration,
    pub rate_limits: RateLimits,
    /// How long a user's reads stay on the primary after that user wrote.
    pub read_your_writes_window: Duration,
    /// Requests taking at least this long are logged at info (others at debug).
    pub slow_request: Duration,
    /// How long a client may take to send a request's head (from its first byte, or
    /// from connecting for the first request) before it is disconnected.
    pub header_read_timeout: Duration,
    /// Test-only: checkout ignores the Idempotency-Key (see README).
    pub unsafe_non_idempotent_checkout: bool,
}

impl Settings {
    pub fn new(database_url: impl Into<String>) -> Self {
        Settings {
            database_url: database_url.into(),
            read_database_url: None,
            redis_url: None,
            redis_prefix: "shop:".to_owned(),
            redis_sentinels: Vec::new(),
            redis_sentinel_master: "shop".to_owned(),
            db_pool_size: 10,
            db_pooler: Pooler::None,
            roles: Roles::all(),
            token_ttl: Duration::from_secs(24 * 3600),
            session_cache: Duration::from_secs(10),
            session_share: Duration::from_secs(24 * 3600),
            rate_limits: RateLimits::default(),
            read_your_writes_window: Duration::from_secs(5),
            slow_request: Duration::from_millis(500),
            header_read_timeout: Duration::from_secs(30),
            unsafe_non_idempotent_checkout: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_roles() {
        let r: Roles = "auth, cart".parse().unwrap();
        assert!(r.contains(Role::Auth) && r.contains(Role::Cart) && !r.contains(Role::Flash));
        assert_eq!("all".parse::<Roles>().unwrap(), Roles::all());
        assert!("auth,bogus".parse::<Roles>().is_err());
        assert!("".parse::<Roles>().is_err());
    }

    #[test]
    fn parses_rates() {
        assert_eq!("10:20".parse::<RateSpec>().unwrap(), RateSpec { per_second: 10.0, burst: 20.0 });
        assert_eq!("5".parse::<RateSpec>().unwrap(), RateSpec { per_second: 5.0, burst: 5.0 });
        assert!(!"0".parse::<RateSpec>().unwrap().is_enabled());
        assert!("x:1".parse::<RateSpec>().is_err());
        assert!("-1:3".parse::<RateSpec>().is_err());
    }
}

//! Who is asking: a user's roles, an authenticated user, and a session as the
//! database last confirmed it (with the text form it is shared in through Redis). A
//! leaf: the extractors (`extract.rs`) and `AppState`'s session cache both use it.

use time::OffsetDateTime;

use crate::error::AppError;

/// What a user may do, as stored in `users.roles`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserRoles {
    pub buyer: bool,
    pub seller: bool,
}

impl UserRoles {
    pub fn from_db(s: &str) -> Self {
        UserRoles { buyer: s == "buyer" || s == "both", seller: s == "seller" || s == "both" }
    }

    pub fn as_db(self) -> &'static str {
        match (self.buyer, self.seller) {
            (true, true) => "both",
            (false, true) => "seller",
            _ => "buyer",
        }
    }
}

/// An authenticated user (valid, unexpired bearer token).
#[derive(Clone, Debug)]
pub struct AuthUser {
    pub id: i64,
    pub email: String,
    pub roles: UserRoles,
}

impl AuthUser {
    pub fn require_seller(&self) -> Result<(), AppError> {
        if self.roles.seller { Ok(()) } else { Err(AppError::forbidden("seller role required")) }
    }
    pub fn require_buyer(&self) -> Result<(), AppError> {
        if self.roles.buyer { Ok(()) } else { Err(AppError::forbidden("buyer role required")) }
    }
}

/// A session as the database last confirmed it, kept in `AppState::session_cache`.
#[derive(Clone)]
pub struct CachedSession {
    pub user: AuthUser,
    pub expires_at: OffsetDateTime,
}

impl CachedSession {
    pub fn new(user: AuthUser, expires_at: OffsetDateTime) -> Self {
        CachedSession { user, expires_at }
    }

    /// `id roles expires_at(unix) email`: the email goes last, it may hold anything.
    pub fn encode(&self) -> String {
        format!("{} {} {} {}", self.user.id, self.user.roles.as_db(), self.expires_at.unix_timestamp(), self.user.email)
    }

    pub fn decode(text: &str) -> Option<CachedSession> {
        let mut parts = text.splitn(4, ' ');
        let id = parts.next()?.parse().ok()?;
        let roles = UserRoles::from_db(parts.next()?);
        let expires_at = OffsetDateTime::from_unix_timestamp(parts.next()?.parse().ok()?).ok()?;
        let email = parts.next()?.to_owned();
        Some(CachedSession { user: AuthUser { id, email, roles }, expires_at })
    }
}

#[cfg(test)]
mod tests {
    use super::{AuthUser, CachedSession, UserRoles};

    #[test]
    fn a_shared_session_reads_back_as_written() {
        let roles = UserRoles::from_db("both");
        let session = CachedSession::new(
            AuthUser { id: 42, email: "odd but valid@example.test".to_owned(), roles },
            time::OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap(),
        );
        let back = CachedSession::decode(&session.encode()).unwrap();
        assert_eq!(back.user.id, 42);
        assert_eq!(back.user.email, "odd but valid@example.test");
        assert_eq!(back.user.roles, roles);
        assert_eq!(back.expires_at, session.expires_at);
        assert!(CachedSession::decode("42 buyer").is_none());
        assert!(CachedSession::decode("x buyer 1 a@b").is_none());
    }
}

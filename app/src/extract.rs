//! Request extractors whose rejections are `AppError`s: JSON, path and query errors
//! become 400/413/422 naming the field; bearer-token auth; client address; the
//! Idempotency-Key header.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, header};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::error::AppError;
pub use crate::identity::{AuthUser, CachedSession, UserRoles};
use crate::state::AppState;

/// `axum::Json` with errors that name the offending field.
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        if !json_content_type(req.headers()) {
            return Err(AppError::bad_request("expected `Content-Type: application/json`", "Content-Type"));
        }
        let bytes = match Bytes::from_request(req, state).await {
            Ok(bytes) => bytes,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => return Err(AppError::PayloadTooLarge),
            Err(_) => return Err(AppError::bad_request("unreadable request body", "body")),
        };
        parse_json(&bytes).map(Json)
    }
}

/// A JSON body as `T`, with the errors `Json` gives (400 for what is not JSON, 422
/// naming the field for a value that does not fit). Routes that take their body as
/// bytes (a flash purchase, whose body is optional) parse it here too.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AppError> {
    match axum::Json::<T>::from_bytes(bytes) {
        Ok(axum::Json(value)) => Ok(value),
        Err(JsonRejection::JsonSyntaxError(e)) if serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok() => {
            // Valid JSON that serde_json still calls a syntax error: a value of the
            // wrong kind where an enum was expected (`"roles": ["seller"]`). The
            // field comes from the path; what was expected, from reading it again.
            let (_, field) = describe_serde_error(&e.body_text());
            let field = field.unwrap_or_else(|| "body".to_owned());
            let expected = serde_json::from_slice::<serde_json::Value>(bytes)
                .and_then(serde_json::from_value::<T>)
                .err()
                .map_or_else(|| "a value of another type".to_owned(), |e| e.to_string());
            Err(AppError::Unprocessable { message: format!("{field}: {expected}"), field: Some(field) })
        }
        // JSON Schema counts `5.0` as an integer; serde does not. Read such numbers as
        // integers and try again (only here, so the common path parses once).
        Err(JsonRejection::JsonDataError(e)) if e.body_text().contains("invalid type: floating point") => {
            let retried = serde_json::from_slice::<serde_json::Value>(bytes).map(integral).and_then(serde_json::from_value::<T>);
            retried.map_err(|_| json_rejection(JsonRejection::JsonDataError(e)))
        }
        Err(rejection) => Err(json_rejection(rejection)),
    }
}

/// `value` with every number that has no fractional part (and fits) as an integer.
fn integral(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15 => Value::from(f as i64),
            _ => Value::Number(n),
        },
        Value::Array(items) => Value::Array(items.into_iter().map(integral).collect()),
        Value::Object(fields) => Value::Object(fields.into_iter().map(|(k, v)| (k, integral(v))).collect()),
        other => other,
    }
}

/// `application/json` or any `application/*+json`, as axum's `Json` accepts.
fn json_content_type(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    let essence = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn json_rejection(rejection: JsonRejection) -> AppError {
    match rejection {
        JsonRejection::JsonDataError(e) => {
            let (message, field) = describe_serde_error(&e.body_text());
            AppError::Unprocessable { message, field: Some(field.unwrap_or_else(|| "body".to_owned())) }
        }
        JsonRejection::JsonSyntaxError(_) => AppError::bad_request("malformed JSON", "body"),
        JsonRejection::MissingJsonContentType(_) => AppError::bad_request("expected `Content-Type: application/json`", "Content-Type"),
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => AppError::PayloadTooLarge,
        _ => AppError::bad_request("unreadable request body", "body"),
    }
}

/// Splits axum's "<context>: <path>: <serde message> at line L column C" into a
/// message and the last path segment (the field); root-level errors such as
/// "missing field `email`" take the field from the backticks.
fn describe_serde_error(text: &str) -> (String, Option<String>) {
    let rest = text.split_once(": ").map_or(text, |(_, r)| r);
    let rest = match rest.rfind(" at line ") {
        Some(i) => &rest[..i],
        None => rest,
    };
    if let Some((path, message)) = rest.split_once(": ")
        && !path.contains(' ')
    {
        let last = path.rsplit('.').next().unwrap_or(path);
        let field = last.split('[').next().unwrap_or(last);
        let field = if field.is_empty() { path } else { field };
        return (format!("{field}: {message}"), Some(field.to_owned()));
    }
    let field = rest.split('`').nth(1).map(str::to_owned);
    (rest.to_owned(), field)
}

/// `axum::extract::Path` with 400 errors naming the parameter.
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        use axum::extract::path::ErrorKind;
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => {
                let field = match e.kind() {
                    ErrorKind::ParseErrorAtKey { key, .. } | ErrorKind::InvalidUtf8InPathParam { key } | ErrorKind::DeserializeError { key, .. } => {
                        key.clone()
                    }
                    _ => "id".to_owned(),
                };
                Err(AppError::bad_request(format!("invalid path parameter `{field}`"), &field))
            }
            Err(_) => Err(AppError::bad_request("invalid path", "path")),
        }
    }
}

/// `axum::extract::Query` with 400 errors naming the parameter.
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => {
                let (message, field) = describe_serde_error(&e.body_text());
                Err(AppError::BadRequest { message, field: Some(field.unwrap_or_else(|| "query".to_owned())) })
            }
            Err(_) => Err(AppError::bad_request("invalid query string", "query")),
        }
    }
}

/// The sha256 digest under which a bearer token is stored.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty() && t.len() <= 256)
}

/// The user behind `token`: from this process's cache, else from Redis, else from the
/// database. A session confirmed by the database within the last
/// `Settings::session_cache` is trusted here without asking again (two of the eleven
/// statements of an order were these lookups); one written at login or confirmed by
/// any instance within `Settings::session_share` is trusted from Redis, so a token this
/// instance has not seen yet (a flash sale's ten thousand buyers) costs no database
/// statement. Expiry is checked on every request. Unknown tokens are never cached, so a
/// new login works at once anywhere. [`revoke`] (logout) deletes the session in all
/// three places.
async fn lookup(state: &AppState, token: &str) -> Result<Option<AuthUser>, AppError> {
    let hash = hash_token(token);
    if let Some(s) = state.session_cache.get(&hash) {
        if s.expires_at > OffsetDateTime::now_utc() {
            return Ok(Some(s.user));
        }
        state.session_cache.remove(&hash);
        return Ok(None);
    }
    if let Some(shared) = shared_session(state, &hash).await {
        let user = shared.user.clone();
        state.session_cache.put(hash, shared);
        return Ok(Some(user));
    }
    let row: Option<(i64, String, String, OffsetDateTime)> = sqlx::query_as(
        "SELECT u.id, u.email, u.roles, s.expires_at FROM sessions s JOIN users u ON u.id = s.user_id
         WHERE s.token_hash = $1 AND s.expires_at > now()",
    )
    .bind(&hash[..])
    .fetch_optional(&state.primary)
    .await?;
    let Some((id, email, roles, expires_at)) = row else {
        return Ok(None);
    };
    let cached = CachedSession { user: AuthUser { id, email, roles: UserRoles::from_db(&roles) }, expires_at };
    share_session(state, &hash, &cached).await;
    let user = cached.user.clone();
    state.session_cache.put(hash, cached);
    Ok(Some(user))
}

fn session_key(state: &AppState, hash: &[u8; 32]) -> Option<(crate::redis_link::RedisLink, String)> {
    // Without a cache of its own an instance asks the database every time, as set.
    if state.settings.session_share.is_zero() || state.settings.session_cache.is_zero() {
        return None;
    }
    let redis = state.redis()?;
    let key = redis.key(format_args!("session:{}", hex::encode(hash)));
    Some((redis.clone(), key))
}

/// The session Redis holds for `hash`, if it is there, readable and unexpired. Any
/// failure is `None`: the database decides then.
async fn shared_session(state: &AppState, hash: &[u8; 32]) -> Option<CachedSession> {
    let (redis, key) = session_key(state, hash)?;
    let text: Option<String> = redis
        .call(|mut c| async move { redis::AsyncCommands::get(&mut c, key).await })
        .await
        .inspect_err(|e| tracing::debug!(error = %e, "session not read from redis"))
        .ok()?;
    CachedSession::decode(&text?).filter(|s| s.expires_at > OffsetDateTime::now_utc())
}

/// Puts a session in Redis for every instance, for `Settings::session_share` and
/// never past its expiry. Best effort: without it the next instance asks the database.
pub async fn share_session(state: &AppState, hash: &[u8; 32], session: &CachedSession) {
    let Some((redis, key)) = session_key(state, hash) else {
        return;
    };
    let left = (session.expires_at - OffsetDateTime::now_utc()).whole_seconds();
    let ttl = left.min(state.settings.session_share.as_secs() as i64);
    if ttl <= 0 {
        return;
    }
    let value = session.encode();
    let result: redis::RedisResult<()> = redis.call(|mut c| async move { redis::AsyncCommands::set_ex(&mut c, key, value, ttl as u64).await }).await;
    if let Err(e) = result {
        tracing::debug!(error = %e, "session not shared in redis");
    }
}

async fn authenticate(parts: &Parts, state: &AppState) -> Result<AuthUser, AppError> {
    let token = bearer(parts).ok_or(AppError::Unauthorized)?;
    let user = lookup(state, token).await?.ok_or(AppError::Unauthorized)?;
    crate::request_log::record_user(user.id);
    Ok(user)
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let user = authenticate(parts, state).await?;
        // Marked before the write happens: conservative, and it cannot be forgotten
        // by a handler.
        if parts.method != Method::GET && parts.method != Method::HEAD {
            state.mark_write(user.id).await;
        }
        Ok(user)
    }
}

/// An authenticated user not yet marked as a writer for read-your-writes: the handler
/// calls `AppState::mark_write` itself before it writes. For routes that mostly refuse
/// without writing (a flash sale's losers), where the mark is a Redis write per request.
pub struct UnmarkedUser(pub AuthUser);

impl FromRequestParts<AppState> for UnmarkedUser {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        authenticate(parts, state).await.map(UnmarkedUser)
    }
}

/// The caller's session: who they are and the hash their token is stored under (for
/// ending it, see [`revoke`]).
pub struct Session {
    pub user: AuthUser,
    pub token_hash: [u8; 32],
}

impl FromRequestParts<AppState> for Session {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let user = authenticate(parts, state).await?;
        let token = bearer(parts).ok_or(AppError::Unauthorized)?;
        Ok(Session { user, token_hash: hash_token(token) })
    }
}

/// Ends the session stored under `hash`: its row, this process's cached copy and the
/// copy Redis shares with every instance. Instances that cached it trust it until
/// their `Settings::session_cache` window passes; if Redis cannot be reached, its copy
/// stays until it expires there (`Settings::session_share`).
pub async fn revoke(state: &AppState, hash: &[u8; 32]) -> Result<(), AppError> {
    sqlx::query("DELETE FROM sessions WHERE token_hash = $1").bind(&hash[..]).execute(&state.primary).await?;
    state.session_cache.remove(hash);
    if let Some((redis, key)) = session_key(state, hash) {
        let result: redis::RedisResult<()> = redis.call(|mut c| async move { redis::AsyncCommands::del(&mut c, key).await }).await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "an ended session stays in redis until it expires there");
        }
    }
    Ok(())
}

/// The user behind an optional bearer token on public routes; an invalid token is
/// treated as anonymous (it only steers read routing there).
pub struct MaybeUser(pub Option<AuthUser>);

impl FromRequestParts<AppState> for MaybeUser {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        match bearer(parts) {
            Some(token) => {
                let user = lookup(state, token).await?;
                if let Some(user) = &user {
                    crate::request_log::record_user(user.id);
                }
                Ok(MaybeUser(user))
            }
            None => Ok(MaybeUser(None)),
        }
    }
}

/// The client address for rate limiting: the first X-Forwarded-For entry (set by
/// our load balancer), else the peer address.
pub struct ClientIp(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, AppError> {
        let forwarded = parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty() && v.len() <= 64);
        if let Some(ip) = forwarded {
            return Ok(ClientIp(ip.to_owned()));
        }
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string());
        Ok(ClientIp(peer.unwrap_or_else(|| "unknown".to_owned())))
    }
}

/// The `Idempotency-Key` header, required on checkout and flash purchases.
pub struct IdempotencyKey(pub String);

pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, AppError> {
        let value =
            parts.headers.get(IDEMPOTENCY_HEADER).ok_or_else(|| AppError::bad_request("missing Idempotency-Key header", IDEMPOTENCY_HEADER))?;
        let key = value
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|k| !k.is_empty() && k.len() <= 255)
            .ok_or_else(|| AppError::bad_request("invalid Idempotency-Key header", IDEMPOTENCY_HEADER))?;
        Ok(IdempotencyKey(key.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::describe_serde_error;

    #[test]
    fn names_the_field() {
        let (_, f) = describe_serde_error(
            "Failed to deserialize the JSON body into the target type: quantity: invalid type: string \"x\", expected i32 at line 1 column 20",
        );
        assert_eq!(f.as_deref(), Some("quantity"));
        let (_, f) = describe_serde_error("Failed to deserialize the JSON body into the target type: missing field `email` at line 1 column 2");
        assert_eq!(f.as_deref(), Some("email"));
        let (_, f) = describe_serde_error("Failed to deserialize query string: limit: invalid digit found in string");
        assert_eq!(f.as_deref(), Some("limit"));
        let (_, f) = describe_serde_error("Failed to deserialize the JSON body into the target type: b[0].y: bad");
        assert_eq!(f.as_deref(), Some("y"));
    }
}

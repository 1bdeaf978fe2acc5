//! Users and sessions: register, login, me. Passwords are argon2id-hashed on a
//! semaphore-bounded set of blocking threads; tokens are random and stored hashed.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::domain::{Email, Password};
use crate::error::{AppError, AppResult, ErrorBody, is_unique_violation};
use crate::extract::{AuthUser, CachedSession, ClientIp, Json, Session, UserRoles, hash_token, revoke, share_session};
use crate::state::AppState;
use crate::{lockout, ratelimit};

#[derive(Clone, Copy, Debug, Deserialize, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RolesInput {
    Buyer,
    Seller,
    Both,
}

impl RolesInput {
    fn as_str(self) -> &'static str {
        match self {
            RolesInput::Buyer => "buyer",
            RolesInput::Seller => "seller",
            RolesInput::Both => "both",
        }
    }
}

#[derive(Deserialize, ToSchema)]
pub struct RegisterRequest {
    #[schema(value_type = String, format = "email")]
    pub email: Email,
    #[schema(value_type = String, min_length = 8, max_length = 256)]
    pub password: Password,
    pub roles: RolesInput,
}

#[derive(Serialize, ToSchema)]
pub struct UserResponse {
    pub id: i64,
    pub email: String,
    pub roles: String,
}

#[derive(Deserialize, ToSchema)]
pub struct LoginRequest {
    #[schema(value_type = String, format = "email")]
    pub email: Email,
    pub password: String,
}

#[derive(Serialize, ToSchema)]
pub struct LoginResponse {
    pub token: String,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

fn argon2() -> Argon2<'static> {
    // OWASP's minimum for argon2id: cheap enough for tests, still memory-hard.
    let params = Params::new(19_456, 2, 1, None).expect("static argon2 params are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Runs `f` on a blocking thread, at most one per core at a time.
async fn on_hasher<T: Send + 'static>(state: &AppState, f: impl FnOnce() -> T + Send + 'static) -> AppResult<T> {
    let _permit = state.hasher.acquire().await.map_err(|e| AppError::Internal(e.into()))?;
    tokio::task::spawn_blocking(f).await.map_err(|e| AppError::Internal(e.into()))
}

pub async fn hash_password(state: &AppState, password: String) -> AppResult<String> {
    on_hasher(state, move || {
        let mut bytes = [0u8; 16];
        rand::rng().fill_bytes(&mut bytes);
        let salt = SaltString::encode_b64(&bytes).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
        argon2().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| anyhow::anyhow!("hash password: {e}"))
    })
    .await?
    .map_err(AppError::Internal)
}

async fn verify_password(state: &AppState, password: String, hash: String) -> AppResult<bool> {
    on_hasher(state, move || PasswordHash::new(&hash).map(|parsed| argon2().verify_password(password.as_bytes(), &parsed).is_ok()).unwrap_or(false))
        .await
}

#[utoipa::path(post, path = "/register", tag = "auth", request_body = RegisterRequest,
    responses((status = 201, body = UserResponse), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
#[tracing::instrument(skip_all, fields(email))]
pub async fn register(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    Json(req): Json<RegisterRequest>,
) -> AppResult<(StatusCode, axum::Json<UserResponse>)> {
    ratelimit::check(&state, "register", &client, state.settings.rate_limits.register).await?;
    tracing::Span::current().record("email", req.email.0.as_str());
    let hash = hash_password(&state, req.password.0).await?;
    let row: Result<(i64,), sqlx::Error> = sqlx::query_as("INSERT INTO users (email, password_hash, roles) VALUES ($1, $2, $3) RETURNING id")
        .bind(&req.email.0)
        .bind(&hash)
        .bind(req.roles.as_str())
        .fetch_one(&state.primary)
        .await;
    match row {
        Ok((id,)) => Ok((StatusCode::CREATED, axum::Json(UserResponse { id, email: req.email.0, roles: req.roles.as_str().to_owned() }))),
        Err(e) if is_unique_violation(&e) => Err(AppError::conflict("email already registered", Some("email"))),
        Err(e) => Err(e.into()),
    }
}

/// Logs in. A client that gives a wrong password for one account five times waits
/// before its next attempt for that account (429 with Retry-After: one second,
/// doubling with each further failure up to fifteen minutes, its right password
/// refused too meanwhile); an account that fails twenty times from any clients takes
/// one attempt a second from all of them. Counts are forgotten fifteen minutes after
/// the last failure; a success clears the client's.
#[utoipa::path(post, path = "/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = LoginResponse), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn login(State(state): State<AppState>, ClientIp(client): ClientIp, Json(req): Json<LoginRequest>) -> AppResult<axum::Json<LoginResponse>> {
    ratelimit::check(&state, "login", &client, state.settings.rate_limits.login).await?;
    let had_failures = lockout::check(&state, &req.email.0, &client).await?;
    let row: Option<(i64, String, String, String)> = sqlx::query_as("SELECT id, password_hash, email, roles FROM users WHERE lower(email) = $1")
        .bind(&req.email.0)
        .fetch_optional(&state.primary)
        .await?;
    // An unknown email fails like a wrong password, and counts like one.
    let verified = match row {
        Some((user_id, hash, email, roles)) if req.password.len() <= 256 => {
            verify_password(&state, req.password, hash).await?.then_some((user_id, email, roles))
        }
        _ => None,
    };
    let Some((user_id, email, roles)) = verified else {
        lockout::failed(&state, &req.email.0, &client).await;
        return Err(wrong_credentials());
    };
    if had_failures {
        lockout::succeeded(&state, &req.email.0, &client).await;
    }
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let expires_at = OffsetDateTime::now_utc() + state.settings.token_ttl;
    let token_hash = hash_token(&token);
    sqlx::query("INSERT INTO sessions (token_hash, user_id, expires_at) VALUES ($1, $2, $3)")
        .bind(&token_hash[..])
        .bind(user_id)
        .bind(expires_at)
        .execute(&state.primary)
        .await?;
    // Shared at once, so the token's first request on any instance needs no lookup.
    let user = AuthUser { id: user_id, email, roles: UserRoles::from_db(&roles) };
    share_session(&state, &token_hash, &CachedSession::new(user, expires_at)).await;
    Ok(axum::Json(LoginResponse { token, expires_at }))
}

fn wrong_credentials() -> AppError {
    AppError::WrongCredentials
}

#[utoipa::path(get, path = "/me", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = UserResponse), (status = 401, body = ErrorBody)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn me(user: AuthUser) -> axum::Json<UserResponse> {
    axum::Json(UserResponse { id: user.id, email: user.email, roles: user.roles.as_db().to_owned() })
}

/// Ends the caller's session. The token is refused at once by this instance and by any
/// instance that has not cached it; an instance that has trusts it for at most its
/// session cache window (`SHOP_SESSION_CACHE_SECS`, 10 s by default). While Redis
/// cannot be reached, its shared copy of the session stays until it expires there.
#[utoipa::path(post, path = "/logout", tag = "auth", security(("bearer" = [])),
    responses((status = 204, description = "The session has ended"), (status = 401, body = ErrorBody)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn logout(State(state): State<AppState>, session: Session) -> AppResult<StatusCode> {
    revoke(&state, &session.token_hash).await?;
    Ok(StatusCode::NO_CONTENT)
}

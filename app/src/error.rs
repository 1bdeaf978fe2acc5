//! `AppError`: the one error type handlers return, and its mapping to HTTP statuses.
//! Client errors name the offending field; internal errors stay opaque to clients and
//! are logged (with the request id) by the middleware in `http`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// The JSON body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The product that lacked stock, on `insufficient stock`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product_id: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{message}")]
    BadRequest { message: String, field: Option<String> },
    #[error("{message}")]
    Unprocessable { message: String, field: Option<String> },
    #[error("unauthorized")]
    Unauthorized,
    #[error("wrong email or password")]
    WrongCredentials,
    #[error("{0}")]
    Forbidden(String),
    #[error("{what} not found")]
    NotFound { what: &'static str, field: Option<&'static str> },
    #[error("{message}")]
    Conflict { message: String, field: Option<String> },
    #[error("insufficient stock")]
    InsufficientStock { product_id: i64 },
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("rate limited")]
    RateLimited { retry_after_secs: u64 },
    #[error("service unavailable")]
    Unavailable,
    #[error("database operation failed")]
    Database(#[from] sqlx::Error),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

/// Attached to 500 responses so the request middleware can log the cause next to the
/// request id and rewrite the body with that id; the cause never reaches the client.
#[derive(Clone, Debug)]
pub struct InternalCause(pub String);

impl AppError {
    pub fn bad_request(message: impl Into<String>, field: &str) -> Self {
        AppError::BadRequest { message: message.into(), field: Some(field.to_owned()) }
    }
    pub fn unprocessable(message: impl Into<String>, field: &str) -> Self {
        AppError::Unprocessable { message: message.into(), field: Some(field.to_owned()) }
    }
    pub fn conflict(message: impl Into<String>, field: Option<&str>) -> Self {
        AppError::Conflict { message: message.into(), field: field.map(str::to_owned) }
    }
    /// A resource addressed by the URL does not exist (or is not the caller's).
    pub fn not_found(what: &'static str) -> Self {
        AppError::NotFound { what, field: None }
    }
    /// An id in the request body or query names nothing.
    pub fn unknown(what: &'static str, field: &'static str) -> Self {
        AppError::NotFound { what, field: Some(field) }
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        AppError::Forbidden(message.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            AppError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            AppError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::Unauthorized | AppError::WrongCredentials => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::NotFound { .. } => StatusCode::NOT_FOUND,
            AppError::Conflict { .. } | AppError::InsufficientStock { .. } => StatusCode::CONFLICT,
            AppError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            AppError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Database(_) | AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Whether a database error is worth retrying the whole transaction for
/// (serialization failure or deadlock).
pub fn is_retryable(err: &sqlx::Error) -> bool {
    matches!(err.as_database_error().and_then(|e| e.code()).as_deref(), Some("40001") | Some("40P01"))
}

/// Whether a database error is a violation of the foreign key `constraint`.
pub fn is_foreign_key_violation(err: &sqlx::Error, constraint: &str) -> bool {
    err.as_database_error().is_some_and(|e| e.code().as_deref() == Some("23503") && e.constraint() == Some(constraint))
}

/// Whether a database error is a unique-constraint violation.
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    err.as_database_error().and_then(|e| e.code()).as_deref() == Some("23505")
}

pub fn is_check_violation(err: &sqlx::Error) -> bool {
    err.as_database_error().and_then(|e| e.code()).as_deref() == Some("23514")
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        let (error, field) = match &self {
            AppError::BadRequest { message, field } | AppError::Unprocessable { message, field } | AppError::Conflict { message, field } => {
                (message.clone(), field.clone())
            }
            AppError::Unauthorized => ("missing, invalid or expired token".to_owned(), Some("Authorization".to_owned())),
            AppError::NotFound { what, field } => (format!("{what} not found"), field.map(str::to_owned)),
            AppError::WrongCredentials => ("wrong email or password".to_owned(), Some("password".to_owned())),
            AppError::Database(_) | AppError::Internal(_) => ("internal error".to_owned(), None),
            other => (other.to_string(), None),
        };
        let product_id = match &self {
            AppError::InsufficientStock { product_id } => Some(*product_id),
            _ => None,
        };
        let field = if product_id.is_some() { Some("product_id".to_owned()) } else { field };
        let mut response = (status, Json(ErrorBody { error, field, request_id: None, product_id })).into_response();
        match self {
            AppError::RateLimited { retry_after_secs } => {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            }
            AppError::Unauthorized => {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            AppError::Database(e) => {
                response.extensions_mut().insert(InternalCause(format!("database: {e}")));
            }
            AppError::Internal(e) => {
                response.extensions_mut().insert(InternalCause(format!("{e:#}")));
            }
            _ => {}
        }
        response
    }
}

pub type AppResult<T> = Result<T, AppError>;

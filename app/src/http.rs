//! The router: `app(state)` assembles the role route groups, the always-on operational
//! routes (/healthz, /readyz, /metrics, /openapi.json), the request-id + metrics
//! middleware and the body limit; `serve` runs it on an already-bound listener.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use axum::{Extension, Router};
use utoipa::OpenApi;

use crate::config::Role;
use crate::error::{AppError, ErrorBody, InternalCause};
use crate::metrics::{Gauges, OutboxGauges, PoolStats};
use crate::request_log::RequestLog;
use crate::state::AppState;
use crate::{auth, cart, catalog, checkout, flash, flash_batch, openapi, orders};

/// Request bodies above this are refused with 413 before they are parsed.
pub const BODY_LIMIT: usize = 64 * 1024;

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Builds the HTTP application for the route groups in `state.settings.roles`.
pub fn app(state: AppState) -> Router {
    let roles = state.settings.roles.clone();
    let mut router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi_json));
    for role in Role::ALL.into_iter().filter(|r| roles.contains(*r)) {
        for (path, handlers) in routes(role) {
            router = router.route(path, handlers);
        }
    }
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// The routes of one role group. [`app`] serves them and [`prefixes`] tells a balancer
/// in front where they are, both from this one table, so the two cannot drift apart.
fn routes(role: Role) -> Vec<(&'static str, MethodRouter<AppState>)> {
    match role {
        Role::Auth => {
            vec![("/register", post(auth::register)), ("/login", post(auth::login)), ("/logout", post(auth::logout)), ("/me", get(auth::me))]
        }
        Role::Catalog => vec![
            ("/shops", post(catalog::create_shop).get(catalog::list_shops)),
            ("/products", post(catalog::create_product).get(catalog::list_products)),
            ("/products/{id}", get(catalog::get_product).put(catalog::update_product)),
            ("/products/{id}/reviews", post(catalog::create_review).get(catalog::list_reviews)),
        ],
        Role::Cart => vec![
            ("/cart", get(cart::get_cart)),
            ("/cart/items", post(cart::add_item)),
            ("/cart/items/{id}", axum::routing::delete(cart::remove_item)),
        ],
        Role::Orders => vec![
            ("/checkout", post(checkout::checkout)),
            ("/orders", get(orders::list_orders)),
            ("/orders/{id}", get(orders::get_order)),
            ("/orders/{id}/invoice", get(orders::get_invoice)),
            ("/orders/{id}/delivery", get(orders::get_delivery)),
            ("/returns", post(orders::create_return)),
        ],
        Role::Flash => vec![
            ("/flash-sales", post(flash::create_sale)),
            ("/flash-sales/{id}", get(flash::get_sale)),
            ("/flash-sales/{id}/purchase", post(flash::purchase).layer(Extension(Arc::new(flash_batch::Batches::default())))),
        ],
    }
}

/// The path prefixes `role` serves (`shop routes`): the first segment of each of its
/// routes, once each, in the table's order. A balancer that sends a prefix and
/// everything under it (`/p`, `/p/…`) to the role's pool sends it all it serves, and
/// no other role serves anything there (`tests::no_role_serves_under_anothers_prefix`).
/// The operational routes (`/healthz`, `/readyz`, `/metrics`, `/openapi.json`) are in
/// every role.
pub fn prefixes(role: Role) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (path, _) in routes(role) {
        let first = path.split('/').nth(1).unwrap_or_default();
        let prefix = format!("/{first}");
        if !out.contains(&prefix) {
            out.push(prefix);
        }
    }
    out
}

/// Serves `app(state)` on a listener the caller bound (so tests can use port 0),
/// until `shutdown` resolves.
///
/// Unlike `axum::serve`, hyper gets a timer here, so a client that has not sent a
/// request's whole head within `Settings::header_read_timeout` of its first byte, or any
/// byte within as long of connecting, is disconnected: slow clients (Slowloris) cannot
/// hold connections open. A kept-alive connection idle for as long between requests is
/// closed too (hyper times the next head from the end of the previous response). After `shutdown`, no connection is accepted and the requests
/// in flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use tower::ServiceExt;

    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let header_read_timeout = state.settings.header_read_timeout;
    builder.http1().timer(TokioTimer::new()).header_read_timeout(header_read_timeout);
    let router = app(state);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of file descriptors, say: the connections in flight free some.
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // What `ConnectInfo` reads (the client's address, for rate limits and logs).
        let service = router.clone().map_request(move |mut req: axum::http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(axum::extract::ConnectInfo(remote));
            req.map(Body::new)
        });
        let (builder, watcher, patience) = (builder.clone(), graceful.watcher(), header_read_timeout);
        tokio::spawn(async move {
            // hyper's timer starts at a request's first byte, so that pools may connect
            // ahead; a connection that sends nothing at all gets as long, then is closed.
            if !matches!(tokio::time::timeout(patience, stream.peek(&mut [0u8; 1])).await, Ok(Ok(n)) if n > 0) {
                return;
            }
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), hyper_util::service::TowerToHyperService::new(service));
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(error = %e, "connection ended");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

async fn not_found() -> AppError {
    AppError::not_found("route")
}

async fn method_not_allowed() -> Response {
    let body = ErrorBody { error: "method not allowed".to_owned(), field: None, request_id: None, product_id: None };
    (StatusCode::METHOD_NOT_ALLOWED, axum::Json(body)).into_response()
}

/// A random (v4) UUID from the thread-local generator: no system call per request.
fn new_request_id() -> String {
    let mut bytes = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    let id = uuid::Builder::from_random_bytes(bytes).into_uuid();
    // Encoded straight into a buffer: `to_string` would go through `fmt`.
    id.hyphenated().encode_lower(&mut uuid::Uuid::encode_buffer()).to_owned()
}

fn valid_request_id(v: &HeaderValue) -> Option<&str> {
    let s = v.to_str().ok()?;
    (!s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic())).then_some(s)
}

/// Request id (honoured or generated, echoed back), the request's log fields,
/// metrics by route template, and the logging + opaque rewrite of internal errors.
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let request_id = req.headers().get(&REQUEST_ID).and_then(valid_request_id).map(str::to_owned).unwrap_or_else(new_request_id);
    let route = req.extensions().get::<MatchedPath>().cloned();
    // Every line logged while the request runs, including the failure and slow-request
    // lines below, names the request (and its user once the bearer token is resolved,
    // extract.rs): see request_log.rs for why this is not a tracing span. Handlers'
    // own spans are at debug level; their events name the ids they are about.
    let log = RequestLog::new(request_id, req.method().clone(), route);
    let mut response = log.scope(next.run(req)).await;
    let status = response.status();
    if let Some(InternalCause(cause)) = response.extensions_mut().remove::<InternalCause>() {
        log.in_scope(|| tracing::error!(error = %cause, "internal error"));
        let body = ErrorBody { error: "internal error".to_owned(), field: None, request_id: Some(log.request_id().to_owned()), product_id: None };
        let mut rewritten = (status, axum::Json(body)).into_response();
        std::mem::swap(rewritten.headers_mut(), response.headers_mut());
        rewritten.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response = rewritten;
    }
    if let Ok(v) = HeaderValue::from_str(log.request_id()) {
        response.headers_mut().insert(REQUEST_ID.clone(), v);
    }
    let elapsed = start.elapsed();
    state.metrics.observe(log.route(), log.method(), status.as_u16(), elapsed);
    // One line per request would cost more than the request itself on the hot
    // paths: ordinary requests log at debug, slow ones at info, failures at warn.
    macro_rules! finished {
        ($level:expr, $message:literal) => {
            tracing::event!($level, status = status.as_u16(), elapsed_ms = elapsed.as_secs_f64() * 1e3, $message)
        };
    }
    // The ordinary request's line is debug: skip even setting up its scope unless
    // debug logging is on.
    if status.is_server_error() {
        log.in_scope(|| finished!(tracing::Level::WARN, "request failed"));
    } else if elapsed >= state.settings.slow_request {
        log.in_scope(|| finished!(tracing::Level::INFO, "slow request"));
    } else if tracing::level_enabled!(tracing::Level::DEBUG) {
        log.in_scope(|| finished!(tracing::Level::DEBUG, "request finished"));
    }
    response
}

#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, description = "alive")))]
pub async fn healthz() -> &'static str {
    "ok"
}

#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses((status = 200, description = "the primary answers"), (status = 503, body = ErrorBody)))]
pub async fn readyz(State(state): State<AppState>) -> Result<&'static str, AppError> {
    let probe = tokio::time::timeout(Duration::from_secs(1), sqlx::query("SELECT 1").execute(&state.primary)).await;
    match probe {
        Ok(Ok(_)) => Ok("ready"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness probe failed");
            Err(AppError::Unavailable)
        }
        Err(_) => Err(AppError::Unavailable),
    }
}

#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, description = "Prometheus text format")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let mut pools = vec![PoolStats::of("primary", &state.primary)];
    if let Some(replica) = &state.replica {
        pools.push(PoolStats::of("replica", replica));
    }
    let outbox =
        tokio::time::timeout(Duration::from_millis(500), sqlx::query_as::<_, (i64, f64, i64, i64)>(OutboxGauges::SQL).fetch_one(&state.primary))
            .await
            .ok()
            .and_then(Result::ok)
            .map(|(backlog, oldest_pending_seconds, dead_letters, dead_letters_recent)| OutboxGauges {
                backlog,
                oldest_pending_seconds,
                dead_letters,
                dead_letters_recent,
            });
    let text = state.metrics.render(&Gauges { pools, outbox, redis_up: state.redis_status() });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain; version=0.0.4")
        .body(Body::from(text))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn openapi_json() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(openapi::ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::{prefixes, routes};
    use crate::config::Role;

    fn covers(prefix: &str, path: &str) -> bool {
        path == prefix || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'))
    }

    #[test]
    fn no_role_serves_under_anothers_prefix() {
        for role in Role::ALL {
            for (path, _) in routes(role) {
                let owners: Vec<Role> = Role::ALL.into_iter().filter(|r| prefixes(*r).iter().any(|p| covers(p, path))).collect();
                assert_eq!(owners, [role], "{path}");
            }
        }
        for operational in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
            assert!(Role::ALL.iter().all(|r| !prefixes(*r).iter().any(|p| covers(p, operational))), "{operational} is in every role");
        }
    }

    #[test]
    fn a_roles_prefixes_are_its_routes_first_segments_once_each() {
        assert_eq!(prefixes(Role::Auth), ["/register", "/login", "/logout", "/me"]);
        assert_eq!(prefixes(Role::Catalog), ["/shops", "/products"]);
        assert_eq!(prefixes(Role::Orders), ["/checkout", "/orders", "/returns"]);
    }
}

//! What every log line of a request says about it (id, method, route, user), without a
//! tracing span per request.
//!
//! A span would carry these fields, but the JSON formatter serializes a span's fields
//! the moment the span is created; with entering, leaving and closing it, that was about
//! a sixth of a cached GET's CPU (BENCHMARKS.md, fifth session), paid by every request
//! although most log nothing. Here the fields wait in a task-local [`RequestLog`] that
//! [`RequestLog::scope`] sets around the request's future, and [`WithRequest`] adds them
//! to the few events that are written: as the `span` object JSON lines always had
//! (`span.request_id`, `span.method`, `span.route`, `span.user_id`), or at the end of a
//! text line.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, OnceLock};

use axum::extract::MatchedPath;
use axum::http::Method;
use serde_json::{Map, Value};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{Format, Full, Json, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

tokio::task_local! {
    static CURRENT: Arc<RequestLog>;
}

/// The request a task is serving, as its log lines name it.
#[derive(Debug)]
pub struct RequestLog {
    request_id: String,
    method: Method,
    route: Option<MatchedPath>,
    /// Set once the bearer token is resolved (extract.rs).
    user_id: OnceLock<i64>,
}

impl RequestLog {
    pub fn new(request_id: String, method: Method, route: Option<MatchedPath>) -> Arc<Self> {
        Arc::new(RequestLog { request_id, method, route, user_id: OnceLock::new() })
    }

    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    pub fn method(&self) -> &str {
        self.method.as_str()
    }

    /// The route template (`/products/{id}`), or `unmatched`.
    pub fn route(&self) -> &str {
        self.route.as_ref().map_or("unmatched", MatchedPath::as_str)
    }

    /// Runs `fut` as this request: events it logs carry the request's fields.
    pub async fn scope<F: Future>(self: &Arc<Self>, fut: F) -> F::Output {
        CURRENT.scope(self.clone(), fut).await
    }

    /// Runs `f` (which logs) as this request, outside its future.
    pub fn in_scope<R>(self: &Arc<Self>, f: impl FnOnce() -> R) -> R {
        CURRENT.sync_scope(self.clone(), f)
    }

    fn json_fields(&self) -> Map<String, Value> {
        let mut fields = Map::new();
        fields.insert("name".into(), "request".into());
        fields.insert("request_id".into(), self.request_id.as_str().into());
        fields.insert("method".into(), self.method().into());
        fields.insert("route".into(), self.route().into());
        if let Some(id) = self.user_id.get() {
            fields.insert("user_id".into(), (*id).into());
        }
        fields
    }
}

impl fmt::Display for RequestLog {
    /// The text form: `request_id=… method=… route=… user_id=…`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request_id={} method={} route={}", self.request_id, self.method(), self.route())?;
        match self.user_id.get() {
            Some(id) => write!(f, " user_id={id}"),
            None => Ok(()),
        }
    }
}

/// Names the signed-in user in the current request's log lines; outside a request it
/// does nothing.
pub fn record_user(user_id: i64) {
    let _ = CURRENT.try_with(|log| log.user_id.set(user_id));
}

/// An event formatter that adds the current request's fields to what `inner` writes.
/// A request's lines are formatted into a buffer first, so in a terminal they lose
/// their colours; the JSON lines that deployments read are unchanged but for the fields.
pub struct WithRequest<F> {
    inner: F,
    json: bool,
}

impl WithRequest<Format<Json>> {
    /// The shop's JSON lines: one object per event, the current span as `span`.
    pub fn json() -> Self {
        let inner = tracing_subscriber::fmt::format().json().with_current_span(true).with_span_list(false);
        WithRequest { inner, json: true }
    }
}

impl WithRequest<Format<Full>> {
    /// The shop's text lines, for people reading a terminal.
    pub fn text() -> Self {
        WithRequest { inner: tracing_subscriber::fmt::format(), json: false }
    }
}

impl<S, N, F> FormatEvent<S, N> for WithRequest<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let Ok(log) = CURRENT.try_with(Arc::clone) else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.inner.format_event(ctx, Writer::new(&mut line), event)?;
        let line = line.trim_end_matches('\n');
        if !self.json {
            return writeln!(writer, "{line} {log}");
        }
        let span = Value::Object(log.json_fields());
        match line.strip_suffix('}') {
            // The usual case: no span is entered, so `inner` wrote no `span` key, and
            // the request's fields go last, where `inner` puts a span's.
            Some(head) if ctx.lookup_current().is_none() => {
                writeln!(writer, "{head},\"span\":{span}}}")
            }
            // A handler's own span (debug logging): its fields join the request's.
            _ => {
                // Not expected; but a line without the request's fields beats none.
                let Ok(mut value) = serde_json::from_str::<Value>(line) else {
                    return writeln!(writer, "{line}");
                };
                let Some(object) = value.as_object_mut() else {
                    return writeln!(writer, "{line}");
                };
                let merged = object.entry("span").or_insert_with(|| Value::Object(Map::new()));
                if let (Some(merged), Value::Object(ours)) = (merged.as_object_mut(), span) {
                    for (key, v) in ours {
                        merged.entry(key).or_insert(v);
                    }
                }
                writeln!(writer, "{value}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Mutex;

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Lines {
        type Writer = Lines;
        fn make_writer(&'a self) -> Lines {
            self.clone()
        }
    }

    /// Logs through the shop's JSON or text format (as main.rs sets it up) and returns
    /// the lines written.
    fn logged(json: bool, f: impl FnOnce()) -> Vec<String> {
        let lines = Lines::default();
        let builder = tracing_subscriber::fmt().with_max_level(tracing::Level::DEBUG).with_writer(lines.clone());
        let subscriber: Box<dyn Subscriber + Send + Sync> = if json {
            Box::new(builder.json().event_format(WithRequest::json()).finish())
        } else {
            Box::new(builder.with_ansi(false).event_format(WithRequest::text()).finish())
        };
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    fn request() -> Arc<RequestLog> {
        RequestLog::new("req-1".into(), Method::POST, None)
    }

    #[test]
    fn json_lines_of_a_request_carry_its_fields_as_the_span_object() {
        let log = request();
        let lines = logged(true, || {
            tracing::info!("before any request");
            log.in_scope(|| {
                tracing::info!(order_id = 7, "order placed");
                record_user(42);
                let handler = tracing::debug_span!("checkout", cart_lines = 2);
                handler.in_scope(|| tracing::warn!("inside the handler's span"));
            });
        });
        let parsed: Vec<Value> = lines.iter().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
        assert_eq!(parsed.len(), 3, "{lines:?}");
        assert!(parsed[0].get("span").is_none(), "{}", parsed[0]);

        let placed = &parsed[1];
        assert_eq!(placed["fields"]["message"], "order placed");
        assert_eq!(placed["fields"]["order_id"], 7);
        assert_eq!(placed["span"]["name"], "request");
        assert_eq!(placed["span"]["request_id"], "req-1");
        assert_eq!(placed["span"]["method"], "POST");
        assert_eq!(placed["span"]["route"], "unmatched");
        assert!(placed["span"].get("user_id").is_none(), "{placed}");

        // A handler's span keeps its name and fields, and gains the request's.
        let inside = &parsed[2];
        assert_eq!(inside["span"]["name"], "checkout", "{inside}");
        assert_eq!(inside["span"]["cart_lines"], 2, "{inside}");
        assert_eq!(inside["span"]["request_id"], "req-1", "{inside}");
        assert_eq!(inside["span"]["user_id"], 42, "{inside}");
    }

    #[test]
    fn text_lines_of_a_request_end_with_its_fields() {
        let log = request();
        let lines = logged(false, || {
            log.in_scope(|| {
                record_user(5);
                tracing::info!("order placed");
            });
            tracing::info!("after the request");
        });
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].ends_with("order placed request_id=req-1 method=POST route=unmatched user_id=5"), "{}", lines[0]);
        assert!(lines[1].ends_with("after the request"), "{}", lines[1]);
    }
}

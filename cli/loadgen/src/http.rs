//! A lean HTTP/1.1 client: one keep-alive hyper connection per worker, driven inside the
//! worker's own task, so a request costs no extra task, channel or pool lookup.

use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request as HyperRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::Error;

/// Where requests go: the resolved address and the `Host` header.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub authority: HeaderValue,
}

impl Target {
    /// Parses `http://host:port` (a path after it is ignored; https is refused).
    pub fn parse(url: &str) -> Result<Target, Error> {
        let bad = |why: &str| Error::Url { url: url.to_owned(), why: why.to_owned() };
        let rest = url.strip_prefix("http://").ok_or_else(|| bad("only http:// URLs are supported"))?;
        let authority = rest.split('/').next().unwrap_or_default();
        if authority.is_empty() {
            return Err(bad("no host"));
        }
        let with_port =
            if authority.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) { authority.to_owned() } else { format!("{authority}:80") };
        let addr = with_port.to_socket_addrs().map_err(|e| bad(&e.to_string()))?.next().ok_or_else(|| bad("host has no address"))?;
        let authority = HeaderValue::from_str(authority).map_err(|_| bad("invalid host"))?;
        Ok(Target { addr, authority })
    }
}

/// One request, as a workload describes it. Headers that most requests carry have their
/// own fields so that building a request allocates little.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    /// Path and query, such as `/products?q=red`.
    pub path: String,
    /// Bearer token.
    pub token: Option<HeaderValue>,
    /// `Idempotency-Key`.
    pub key: Option<HeaderValue>,
    /// `X-Forwarded-For`: the simulated client's address, so per-client rate limits see
    /// many clients, as they would in production.
    pub client: Option<HeaderValue>,
    /// A JSON body, or empty.
    pub body: Bytes,
}

impl Request {
    pub fn get(path: impl Into<String>) -> Request {
        Request { method: Method::GET, path: path.into(), token: None, key: None, client: None, body: Bytes::new() }
    }

    pub fn post(path: impl Into<String>, body: impl Into<Bytes>) -> Request {
        Request { method: Method::POST, body: body.into(), ..Request::get(path) }
    }

    pub fn token(mut self, token: Option<&HeaderValue>) -> Request {
        self.token = token.cloned();
        self
    }

    pub fn client(mut self, client: &HeaderValue) -> Request {
        self.client = Some(client.clone());
        self
    }

    pub fn key(mut self, key: &str) -> Request {
        self.key = HeaderValue::from_str(key).ok();
        self
    }

    fn build(&self, target: &Target) -> HyperRequest<Full<Bytes>> {
        let mut b = HyperRequest::builder().method(self.method.clone()).uri(self.path.as_str()).header(header::HOST, target.authority.clone());
        if let Some(t) = &self.token {
            b = b.header(header::AUTHORIZATION, t.clone());
        }
        if let Some(k) = &self.key {
            b = b.header("idempotency-key", k.clone());
        }
        if let Some(c) = &self.client {
            b = b.header("x-forwarded-for", c.clone());
        }
        if !self.body.is_empty() {
            b = b.header(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        // The builder only fails on invalid parts, and every part here was validated.
        b.body(Full::new(self.body.clone())).unwrap_or_else(|_| HyperRequest::new(Full::new(Bytes::new())))
    }
}

/// The value of an `Authorization` header for a bearer token.
pub fn bearer(token: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("Bearer {token}")).ok()
}

/// What came back, or why nothing did.
#[derive(Debug)]
pub enum Reply {
    Response {
        status: u16,
        body: Bytes,
    },
    /// The connection failed (refused, reset, closed early).
    Io,
    /// No full response within the timeout.
    Timeout,
}

/// Pseudo status codes for the two ways a request gets no status.
pub const STATUS_IO: u16 = 0;
pub const STATUS_TIMEOUT: u16 = 1;

impl Reply {
    /// The HTTP status, or [`STATUS_IO`] / [`STATUS_TIMEOUT`].
    pub fn status(&self) -> u16 {
        match self {
            Reply::Response { status, .. } => *status,
            Reply::Io => STATUS_IO,
            Reply::Timeout => STATUS_TIMEOUT,
        }
    }

    pub fn body(&self) -> &[u8] {
        match self {
            Reply::Response { body, .. } => body,
            _ => &[],
        }
    }
}

type Driver = Pin<Box<Connection<TokioIo<TcpStream>, Full<Bytes>>>>;

/// One keep-alive connection. It is polled only while a request is in flight, which is
/// all an HTTP/1.1 client connection needs.
pub struct Conn {
    target: Target,
    live: Option<(SendRequest<Full<Bytes>>, Driver)>,
}

impl Conn {
    /// A connection that opens on first use (or now, with [`Conn::connect`]).
    pub fn new(target: Target) -> Conn {
        Conn { target, live: None }
    }

    /// Opens the TCP connection now, so that connecting is not part of a measurement.
    pub async fn connect(&mut self) -> std::io::Result<()> {
        if self.live.is_none() {
            let stream = TcpStream::connect(self.target.addr).await?;
            stream.set_nodelay(true)?;
            let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.map_err(std::io::Error::other)?;
            self.live = Some((sender, Box::pin(conn)));
        }
        Ok(())
    }

    /// Sends `req` and reads the whole response; reconnects first when the last request
    /// broke the connection. Any failure drops the connection.
    pub async fn send(&mut self, req: &Request, timeout: Duration) -> Reply {
        match tokio::time::timeout(timeout, self.exchange(req)).await {
            Ok(Some(reply)) => reply,
            Ok(None) => {
                self.live = None;
                Reply::Io
            }
            Err(_) => {
                self.live = None;
                Reply::Timeout
            }
        }
    }

    async fn exchange(&mut self, req: &Request) -> Option<Reply> {
        // A connection that ended while idle (the server closed it, or its last response
        // said `Connection: close`, as a reloading balancer's does) is not reused, as no
        // client would (RFC 9112, 9.6): another one is opened.
        if let Some((sender, driver)) = self.live.as_mut() {
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            if sender.is_closed() || driver.as_mut().poll(&mut cx).is_ready() {
                self.live = None;
            }
        }
        self.connect().await.ok()?;
        let (sender, driver) = self.live.as_mut()?;
        let request = req.build(&self.target);
        let exchange = async {
            sender.ready().await.ok()?;
            let resp = sender.send_request(request).await.ok()?;
            let status = resp.status().as_u16();
            let closes = resp.headers().get(header::CONNECTION).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
            let body = resp.into_body().collect().await.ok()?.to_bytes();
            Some((Reply::Response { status, body }, closes))
        };
        let outcome = {
            let mut exchange = std::pin::pin!(exchange);
            tokio::select! {
                biased;
                reply = &mut exchange => reply,
                // The driver ends only when the connection does: failed, or closed after
                // a response that said `Connection: close`, which may already be here.
                // What the driver delivered is read; a response cut short is a failure.
                _ = driver.as_mut() => exchange.await.map(|(reply, _)| (reply, true)),
            }
        };
        let (reply, closes) = outcome?;
        if closes {
            self.live = None;
        }
        Some(reply)
    }
}

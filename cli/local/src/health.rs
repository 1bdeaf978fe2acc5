//! Health checks over loopback: a TCP connect and a minimal HTTP/1.0 client, enough to
//! ask `/readyz` or a REST endpoint without pulling an HTTP client into the CLI.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// Sends one request and returns the status and body of the answer.
pub fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&str>, timeout: Duration) -> Result<(u16, String), String> {
    http_as(addr, method, path, body, None, timeout)
}

/// [`http`] with HTTP Basic credentials (`user`, `password`) when given.
pub fn http_as(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    basic: Option<(&str, &str)>,
    timeout: Duration,
) -> Result<(u16, String), String> {
    use base64::Engine;
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connecting to {addr}: {e}"))?;
    s.set_read_timeout(Some(timeout)).ok();
    s.set_write_timeout(Some(timeout)).ok();
    let body = body.unwrap_or("");
    let auth = basic
        .map(|(user, password)| {
            format!("Authorization: Basic {}\r\n", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
        })
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| format!("reading from {addr}: {e}"))?;
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n");
    let (head, body) = match split {
        Some(i) => (String::from_utf8_lossy(&buf[..i]).into_owned(), &buf[i + 4..]),
        None => (String::from_utf8_lossy(&buf).into_owned(), &buf[buf.len()..]),
    };
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| format!("{addr} did not answer HTTP"))?;
    // HAProxy's stats answer in chunks even to an HTTP/1.0 request.
    let chunked = head.lines().any(|l| l.to_ascii_lowercase().replace(' ', "") == "transfer-encoding:chunked");
    let body = if chunked { dechunk(body) } else { body.to_vec() };
    Ok((code, String::from_utf8_lossy(&body).into_owned()))
}

/// The body of a chunked transfer (`size in hex CRLF data CRLF`…, ending with size 0),
/// as bytes: a chunk may end inside a character.
fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&rest[..eol]);
        let Ok(n) = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16) else { break };
        let data = &rest[eol + 2..];
        if n == 0 {
            break;
        }
        let n = n.min(data.len());
        out.extend_from_slice(&data[..n]);
        rest = data[n..].strip_prefix(b"\r\n").unwrap_or(&data[n..]);
    }
    out
}

/// The HTTP status of `GET path` at `addr`, or an error saying why there is none.
pub fn http_status(addr: SocketAddr, path: &str, timeout: Duration) -> Result<u16, String> {
    http(addr, "GET", path, None, timeout).map(|(code, _)| code)
}

/// The body of `GET path` when it answers 200.
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<String, String> {
    match http(addr, "GET", path, None, timeout)? {
        (200, body) => Ok(body),
        (code, _) => Err(format!("GET {path} at {addr} answered {code}")),
    }
}

/// Whether something still listens on `addr` (so we must not start a second server).
///
/// Waits up to three seconds for the address to come free: a process that was just
/// killed keeps its sockets until its last thread has exited, and its main thread shows
/// as a zombie (so it counts as stopped) before the others are gone.
pub fn port_taken(addr: SocketAddr) -> bool {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        if TcpListener::bind(addr).is_ok() {
            return false;
        }
        if Instant::now() >= deadline {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_chunked_body_is_joined() {
        assert_eq!(super::dechunk(b"5\r\n# px,\r\n3\r\nsv\n\r\n0\r\n\r\n"), b"# px,sv\n");
        // A chunk boundary inside a character, and a body cut short.
        assert_eq!(super::dechunk("1\r\n\u{e9}\r\n".as_bytes()).len(), 1);
        assert_eq!(super::dechunk(b"9\r\nabc"), b"abc");
    }
}

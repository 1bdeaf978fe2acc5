//! Health checks over loopback: a TCP connect and a minimal HTTP GET, enough to ask
//! `/readyz` without pulling an HTTP client into the CLI.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// The HTTP status of `GET path` at `addr`, or an error saying why there is none.
pub fn http_status(addr: SocketAddr, path: &str, timeout: Duration) -> Result<u16, String> {
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connecting to {addr}: {e}"))?;
    s.set_read_timeout(Some(timeout)).ok();
    s.set_write_timeout(Some(timeout)).ok();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").map_err(|e| e.to_string())?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).map_err(|e| format!("reading from {addr}: {e}"))?;
    let head = String::from_utf8_lossy(&buf[..n]);
    head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| format!("{addr} did not answer HTTP"))
}

/// Whether something already listens on `addr` (so we must not start a second server).
pub fn port_taken(addr: SocketAddr) -> bool {
    TcpListener::bind(addr).is_err()
}

//! Hostile HTTP: slow clients, oversized heads, bodies that are not UTF-8, numbers out
//! of range and deeply nested JSON get a clear 4xx or a closed connection, and the shop
//! keeps answering everyone else meanwhile.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// What the server sends back on `stream` until it closes it or `limit` passes.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(limit, stream.read_to_end(&mut got)).await;
    read.ok().map(|_| String::from_utf8_lossy(&got).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_request_head_is_disconnected_and_holds_up_no_one() {
    let timeout = Duration::from_secs(1);
    let app = spawn_app_with(Options { header_read_timeout: timeout, ..Default::default() }).await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    // Slowloris: connections that send half a head, then a byte now and then.
    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: shop\r\nX-Slow: ").await.unwrap();
        slow.push(s);
    }
    // A connection that sends nothing at all.
    let mut silent = TcpStream::connect(&addr).await.unwrap();
    app.get("/healthz", None).await.expect(200);
    for s in &mut slow {
        s.write_all(b"a").await.unwrap();
    }
    app.get("/products", None).await.expect(200);
    for s in &mut slow {
        let answer = read_until_closed(s, timeout * 5).await;
        assert!(answer.is_some(), "a slow client is disconnected once its time to send the head is up");
    }
    assert!(read_until_closed(&mut silent, timeout * 5).await.is_some(), "so is one that sends nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_and_malformed_bodies_get_a_clear_4xx() {
    let app = spawn_app().await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    // A head far beyond any real client's: refused, not buffered without end.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let mut head = String::from("GET /healthz HTTP/1.1\r\nHost: shop\r\n");
    for i in 0..200 {
        head.push_str(&format!("X-Filler-{i}: {}\r\n", "y".repeat(100)));
    }
    head.push_str("\r\n");
    let _ = s.write_all(head.as_bytes()).await;
    let answer = read_until_closed(&mut s, Duration::from_secs(10)).await.expect("the server answers or closes");
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 431"), "{answer}");

    let (_, buyer) = app.user("buyer").await;
    let raw = |body: Vec<u8>| {
        app.client.post(format!("{}/cart/items", app.base)).bearer_auth(&buyer).header("content-type", "application/json").body(body).send()
    };
    let error = |resp: reqwest::Response| async move {
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp.json().await.expect("error bodies are JSON");
        (status, body["field"].as_str().unwrap_or_default().to_owned())
    };
    // Not UTF-8: named where it is.
    assert_eq!(error(raw(b"{\"product_id\": \"\xff\xfe\", \"quantity\": 1}".to_vec()).await.unwrap()).await, (422, "product_id".into()));
    assert_eq!(error(raw(b"\xff{}".to_vec()).await.unwrap()).await, (400, "body".into()));
    // Numbers no field can hold.
    assert_eq!(error(raw(b"{\"product_id\": 1, \"quantity\": 1e400}".to_vec()).await.unwrap()).await.0 / 100, 4);
    let huge = format!(r#"{{"product_id": 1, "quantity": {}}}"#, "9".repeat(400));
    assert_eq!(error(raw(huge.into_bytes()).await.unwrap()).await, (422, "quantity".into()));
    // Nesting deeper than any request has.
    let deep = format!(r#"{{"product_id": 1, "quantity": 1, "x": {}{}}}"#, "[".repeat(100_000), "]".repeat(100_000));
    let (status, _) = error(raw(deep.into_bytes()).await.unwrap()).await;
    assert!(status == 400 || status == 413, "{status}");
    // And the shop is as it was.
    app.get("/healthz", None).await.expect(200);
    assert_eq!(app.count("SELECT count(*) FROM cart_items").await, 0);
}

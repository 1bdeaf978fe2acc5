use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

/// What scalectl does: `shop migrate`, then `shop serve` on port 0, read the port from
/// the `listening on` log line, poll /readyz; `shop worker` drains the outbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_migrates_serves_and_reports_its_port() {
    let url = fresh_database().await;
    let bin = env!("CARGO_BIN_EXE_shop");
    let status = Command::new(bin)
        .arg("migrate")
        .env("DATABASE_URL", &url)
        .status()
        .unwrap();
    assert!(status.success());

    let mut serve = Reap(
        Command::new(bin)
            .arg("serve")
            .env("DATABASE_URL", &url)
            .env("REDIS_URL", redis_url())
            .env("SHOP_BIND", "127.0.0.1:0")
            .env("SHOP_LOG_FORMAT", "json")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stderr = serve.0.stderr.take().unwrap();
    // Keep draining the log after the line we want, as scalectl does.
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            if l.contains("listening on")
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(l);
            }
        }
    });
    let line = tokio::time::timeout(Duration::from_secs(20), rx)
        .await
        .unwrap()
        .expect("listening line");
    let log: serde_json::Value = serde_json::from_str(&line).expect("json log line");
    let message = log["fields"]["message"].as_str().unwrap();
    let addr = message.strip_prefix("listening on ").unwrap();
    assert!(!addr.ends_with(":0"), "the real port is reported: {addr}");
    let ready = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);

    sqlx::query("INSERT INTO outbox (topic, payload) VALUES ('order.placed', '{\"order_id\": 1, \"email\": \"a@b.c\", \"total_cents\": 5}')")
        .execute(&sqlx::PgPool::connect(&url).await.unwrap())
        .await
        .unwrap();
    let _worker = Reap(
        Command::new(bin)
            .args(["worker", "--poll-interval-ms", "50"])
            .env("DATABASE_URL", &url)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let db = sqlx::PgPool::connect(&url).await.unwrap();
    let mut delivered = 0i64;
    for _ in 0..100 {
        delivered = sqlx::query_scalar("SELECT count(*) FROM notifications")
            .fetch_one(&db)
            .await
            .unwrap();
        if delivered == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(delivered, 1, "the worker process delivered the event");
}

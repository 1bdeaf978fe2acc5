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
    let status = Command::new(bin).arg("migrate").env("DATABASE_URL", &url).status().unwrap();
    assert!(status.success());

    let mut serve = Reap(
        Command::new(bin)
            .arg("serve")
            .env("DATABASE_URL", &url)
            .env("REDIS_URL", redis_url())
            .env("SHOP_BIND", "127.0.0.1:0")
            .env("SHOP_LOG_FORMAT", "json")
            // Every request is "slow", so every request logs a line at info level.
            .env("SHOP_SLOW_REQUEST_MS", "0")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stderr = serve.0.stderr.take().unwrap();
    // Keep draining the log, as scalectl does; the test reads the lines it needs.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let next_line_with = |text: &str| -> serde_json::Value {
        loop {
            let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_else(|_| panic!("no log line with {text:?}"));
            if line.contains(text) {
                return serde_json::from_str(&line).expect("json log line");
            }
        }
    };
    let log = next_line_with("listening on");
    let message = log["fields"]["message"].as_str().unwrap();
    let addr = message.strip_prefix("listening on ").unwrap();
    assert!(!addr.ends_with(":0"), "the real port is reported: {addr}");
    let ready = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);

    // A signed-in request's log line names the request id the client sent and the user.
    let db = sqlx::PgPool::connect(&url).await.unwrap();
    let (user_id, token) = user_with_session(&db, "buyer").await;
    let me =
        reqwest::Client::new().get(format!("http://{addr}/me")).bearer_auth(&token).header("x-request-id", "binary-test-me").send().await.unwrap();
    assert_eq!(me.status(), 200);
    let log = next_line_with("binary-test-me");
    assert_eq!(log["fields"]["message"], "slow request", "{log}");
    assert_eq!(log["span"]["request_id"], "binary-test-me", "{log}");
    assert_eq!(log["span"]["route"], "/me", "{log}");
    assert_eq!(log["span"]["user_id"], user_id, "{log}");

    sqlx::query("INSERT INTO outbox (topic, payload) VALUES ('order.placed', '{\"order_id\": 1, \"email\": \"a@b.c\", \"total_cents\": 5}')")
        .execute(&db)
        .await
        .unwrap();
    let _worker =
        Reap(Command::new(bin).args(["worker", "--poll-interval-ms", "50"]).env("DATABASE_URL", &url).stderr(Stdio::null()).spawn().unwrap());
    let mut delivered = 0i64;
    for _ in 0..100 {
        delivered = sqlx::query_scalar("SELECT count(*) FROM notifications").fetch_one(&db).await.unwrap();
        if delivered == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(delivered, 1, "the worker process delivered the event");
}

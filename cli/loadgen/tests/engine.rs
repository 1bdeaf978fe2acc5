//! The engine against an in-process HTTP server on port 0: it keeps the rate, and it
//! measures from each request's due time, so a server-wide stall shows in the
//! percentiles instead of hiding in the requests that were never sent.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use scalectl_loadgen::engine::{Class, Config, Row, Step, Workload, run};
use scalectl_loadgen::http::{Request, Target};
use scalectl_loadgen::schedule::{Arrivals, Schedule};

/// A server that answers at once, except that request number `stall_at` freezes every
/// request for `stall` (a GC pause, a lock, a failover).
struct Server {
    url: String,
    served: Arc<AtomicU64>,
}

async fn serve(stall_at: Option<u64>, stall: Duration, status_every: Option<(u64, u16)>) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let served = Arc::new(AtomicU64::new(0));
    let paused_until: Arc<Mutex<Option<Instant>>> = Arc::default();
    let count = Arc::clone(&served);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let (count, paused_until) = (Arc::clone(&count), Arc::clone(&paused_until));
            tokio::spawn(async move {
                let svc = service_fn(move |_req| {
                    let (count, paused_until) = (Arc::clone(&count), Arc::clone(&paused_until));
                    async move {
                        let n = count.fetch_add(1, Ordering::SeqCst);
                        let until = {
                            let mut p = paused_until.lock().unwrap();
                            if Some(n) == stall_at {
                                *p = Some(Instant::now() + stall);
                            }
                            *p
                        };
                        if let Some(until) = until.filter(|u| *u > Instant::now()) {
                            tokio::time::sleep_until(until.into()).await;
                        }
                        let status = match status_every {
                            Some((every, s)) if n % every == 0 => s,
                            _ => 200,
                        };
                        let mut resp = hyper::Response::new(Full::new(Bytes::from_static(b"{\"ok\":true}")));
                        *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    Server { url, served }
}

struct Get;

impl Workload for Get {
    fn rows(&self) -> Vec<Row> {
        vec![Row { name: "GET /".into(), share: Some(1.0) }]
    }
    fn op(&self, _i: u64, steps: &mut Vec<Step>) {
        steps.push(Step { row: 0, request: Request::get("/"), classify: |s, _| if s == 200 { Class::Ok } else { Class::Fail } });
    }
}

fn uniform(rate: f64, secs: u64, connections: usize) -> Config {
    Config::new(Schedule::new(Arrivals::Uniform, rate, Duration::from_secs(secs), 1), connections)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_keeps_the_rate_against_a_fast_server() {
    let server = serve(None, Duration::ZERO, None).await;
    let target = Target::parse(&server.url).unwrap();
    let started = Instant::now();
    let run = run(&target, &uniform(400.0, 2, 8), Get, None).await.unwrap();
    let took = started.elapsed().as_secs_f64();
    assert_eq!(run.total.count, 800, "every scheduled request was sent");
    assert_eq!(server.served.load(Ordering::SeqCst), 800);
    assert_eq!(run.total.errors, 0);
    assert!((1.9..2.6).contains(&took), "800 requests at 400/s take about 2 s, took {took}");
    assert!((run.offered_rate - 400.0).abs() < 20.0, "offered {}", run.offered_rate);
    // tokio's timer ticks in milliseconds, and the two cores are shared (builds, other
    // tests): a few starts slip past 10 ms when the runtime's threads wait for a core.
    assert!(run.late <= 40, "a fast server leaves (almost) nothing late: {} late, {:?}", run.late, run.start_delay_ms);
    assert!(run.total.latency_ms.p99 < 50.0, "{:?}", run.total.latency_ms);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_second_stall_shows_in_the_percentiles() {
    // 200/s for 5 s over 8 connections; the 300th request freezes the server for 1 s.
    // About 200 requests fall due during the stall. Measured from their due times they
    // took up to 1 s: 20 % of the run, so p90 is hundreds of milliseconds. A closed-loop
    // tool would have sent only 8 of them (one per connection) and reported p90 ≈ 1 ms.
    let server = serve(Some(300), Duration::from_secs(1), None).await;
    let target = Target::parse(&server.url).unwrap();
    let run = run(&target, &uniform(200.0, 5, 8), Get, None).await.unwrap();
    let q = run.total.latency_ms;
    assert_eq!(run.total.count, 1000, "the stall delayed requests but dropped none");
    assert!(q.max >= 950.0, "{q:?}");
    assert!(q.p99 >= 800.0, "{q:?}");
    assert!(q.p90 >= 300.0, "the stall must show beyond a handful of requests: {q:?}");
    assert!(q.p50 < 100.0, "{q:?}");
    // At least those due during the stall; more when a busy machine drains the backlog slowly.
    assert!(run.late >= 150, "the requests due during the stall started late and are counted: {}", run.late);
    assert!(run.timeline.iter().any(|t| t.max_ms >= 950.0), "the timeline shows the stall");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_counted_by_status() {
    let server = serve(None, Duration::ZERO, Some((10, 503))).await;
    let target = Target::parse(&server.url).unwrap();
    let run = run(&target, &uniform(500.0, 1, 4), Get, None).await.unwrap();
    assert_eq!(run.total.count, 500);
    assert_eq!(run.total.errors, 50);
    assert_eq!(run.total.error_statuses.get("503"), Some(&50));
    assert_eq!(run.total.statuses.get("200"), Some(&450));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_outcomes_are_retried_until_definitive() {
    struct Flaky;
    impl Workload for Flaky {
        fn rows(&self) -> Vec<Row> {
            vec![Row { name: "POST /".into(), share: Some(1.0) }]
        }
        fn op(&self, i: u64, steps: &mut Vec<Step>) {
            let req = Request::post("/", "{}").key(&format!("k{i}"));
            steps.push(Step { row: 0, request: req, classify: |s, _| if s == 200 { Class::Ok } else { Class::Retry } });
        }
    }
    // Every 3rd response is a 503: each request is sent again until it gets a 200.
    let server = serve(None, Duration::ZERO, Some((3, 503))).await;
    let target = Target::parse(&server.url).unwrap();
    let mut config = Config::new(Schedule::burst(60), 6);
    config.max_attempts = 5;
    let run = run(&target, &config, Flaky, None).await.unwrap();
    assert_eq!(run.total.ok, 60, "{:?}", run.total);
    assert_eq!(run.total.errors, 0);
    assert!(run.retries >= 15, "about a third of requests needed a retry: {}", run.retries);
    assert_eq!(server.served.load(Ordering::SeqCst), 60 + run.retries);
    assert_eq!(run.retried_statuses.get("503"), Some(&run.retries), "what made each retry is reported");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_an_error_not_a_hang() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let err = run(&Target::parse(&url).unwrap(), &uniform(10.0, 1, 2), Get, None).await.unwrap_err();
    assert!(err.to_string().contains("connecting to"), "{err}");
}

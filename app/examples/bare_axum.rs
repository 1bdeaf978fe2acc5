//! The baseline for `bench/shop.sh`: a bare axum server whose one route returns a fixed
//! JSON body of SIZE bytes, no middleware, no state.
//!
//! `cargo run --release -p shop --example bare_axum -- 127.0.0.1:PORT SIZE`
//! binds first, then prints the bound address on stdout.

use std::process::ExitCode;

use anyhow::Context;
use axum::Router;
use axum::http::header;
use axum::routing::get;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bare_axum: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[tokio::main]
async fn run() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(size)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: bare_axum ADDR SIZE");
    };
    let size: usize = size.parse().context("SIZE must be a number of bytes")?;
    let body: &'static str = Box::leak(json_body(size)?.into_boxed_str());
    // Same path shape as the shop's product route, so the router does the same work.
    let app = Router::new().route("/products/{id}", get(move || async move { ([(header::CONTENT_TYPE, "application/json")], body) }));
    let listener = tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("binding {addr}"))?;
    println!("{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

/// `{"pad":"xxx…"}`, exactly `size` bytes.
fn json_body(size: usize) -> anyhow::Result<String> {
    let overhead = serde_json::json!({ "pad": "" }).to_string().len();
    anyhow::ensure!(size >= overhead, "SIZE must be at least {overhead}");
    let body = serde_json::json!({ "pad": "x".repeat(size - overhead) }).to_string();
    debug_assert_eq!(body.len(), size);
    Ok(body)
}

//! The machine's HTTP ceiling for a `/api/auth/me`-shaped route: warp filters
//! served by hyper's HTTP/1.1 connections on a multi-threaded tokio runtime,
//! with nothing of ours in the way (no database, no logging, no request id,
//! no metrics, no connection caps).
//!
//! It exists so `bench/run.sh` can express `/me` throughput as a fraction of
//! what a plain warp/hyper server does on the same machine in the same run.
//! Measuring the product's own `GET /nope` instead would pay our per-request
//! overhead on both sides of the ratio.
//!
//! ```sh
//! cargo run --release --example bare_warp
//! ```
//!
//! Listens on `127.0.0.1:0` and prints one line to stderr,
//! `bare_warp listening on http://127.0.0.1:PORT`, then serves until killed.
//! `GET /api/auth/me` reads `X-API-Key` (400 without it) and answers a fixed
//! JSON body as long as a bench account's real one, with
//! `Content-Type: application/json`.

use std::process::ExitCode;

use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use warp::Filter;
use warp::http::header::CONTENT_TYPE;
use warp::reply::Response;

/// What `/me` answers for a bench account (`seed-TOKEN-N@example.com` with
/// the bench's credit balance): the same length, give or take a digit.
const BODY: &str = r#"{"email":"seed-0123abcd-17@example.com","tier":"free","credits":999999999,"created_at":"2026-01-01T00:00:00.000Z"}"#;

fn me() -> Response {
    let mut response = Response::new(BODY.into());
    response.headers_mut().insert(
        CONTENT_TYPE,
        warp::http::HeaderValue::from_static("application/json"),
    );
    response
}

#[tokio::main]
async fn main() -> ExitCode {
    let routes = warp::path!("api" / "auth" / "me")
        .and(warp::get())
        .and(warp::header::value("x-api-key"))
        .map(|key: warp::http::HeaderValue| {
            // Read the key, as the real route does before its lookup.
            std::hint::black_box(key.as_bytes());
            me()
        });
    let listener = match TcpListener::bind("127.0.0.1:0").await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("bare_warp: cannot listen on 127.0.0.1:0: {e}");
            return ExitCode::FAILURE;
        }
    };
    let local = listener
        .local_addr()
        .expect("a bound listener has an address");
    eprintln!("bare_warp listening on http://{local}");
    let service = warp::service(routes);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Usually out of file descriptors: back off instead of spinning.
                eprintln!("bare_warp: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            // A stateless filter is `Copy`: each request gets its own.
            let service = hyper::service::service_fn(move |req| {
                let mut routes = service;
                tower_service::Service::call(&mut routes, req)
            });
            // Errors are clients hanging up mid-request: nothing to report.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

//! Prometheus metrics: what is counted, and the separate listener that
//! serves them. With `metrics_bind` unset no recorder is installed and every
//! call here is a no-op. Labels never carry an email or a key.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use warp::reply::Response;
use warp::{Filter, Rejection};

use crate::db::Db;

/// Seconds: from sub-millisecond lookups to multi-second signups.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Whether a recorder is installed; the per-request call returns at once when
/// not, so disabled metrics cost no label allocations.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// One request answered.
pub fn request(method: &str, route: &'static str, status: u16, elapsed: Duration) {
    if !ENABLED.load(Ordering::Relaxed) {
        return;
    }
    let labels = [
        ("method", method_label(method).to_owned()),
        ("route", route.to_owned()),
        ("status", status.to_string()),
    ];
    counter!("kaggleingest_http_requests_total", &labels).increment(1);
    histogram!("kaggleingest_http_request_duration_seconds", &labels[..2])
        .record(elapsed.as_secs_f64());
}

/// The method as a metric label, from a closed set: a client may send any
/// token as its method, and each new label value is a new series kept in
/// memory for the life of the process.
fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];
    KNOWN
        .into_iter()
        .find(|known| *known == method)
        .unwrap_or("other")
}

/// One account created through the API.
pub fn signup() {
    counter!("kaggleingest_signups_total").increment(1);
}

/// One refused authentication, by reason (`missing_key`, `invalid_key`, ...).
pub fn auth_failure(reason: &'static str) {
    counter!("kaggleingest_auth_failures_total", "reason" => reason).increment(1);
}

/// Time one bcrypt hash or verification took.
pub fn bcrypt(elapsed: Duration) {
    histogram!("kaggleingest_bcrypt_seconds").record(elapsed.as_secs_f64());
}

/// Installs the recorder and binds the metrics listener; returns it with
/// the route that answers `GET /metrics` on it (the server serves them).
/// `hash_in_flight` reads the hashing pool's load at scrape time.
pub async fn start(
    addr: SocketAddr,
    db: Db,
    hash_in_flight: impl Fn() -> usize + Clone + Send + Sync + 'static,
) -> Result<
    (
        TcpListener,
        impl Filter<Extract = (Response,), Error = Rejection> + Clone + Send + Sync + 'static,
    ),
    String,
> {
    let handle = PrometheusBuilder::new()
        .set_buckets(&BUCKETS)
        .map_err(|e| format!("metrics: {e}"))?
        .install_recorder()
        .map_err(|e| format!("metrics: {e}"))?;
    ENABLED.store(true, Ordering::Relaxed);
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen for metrics on {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!("metrics on http://{local}/metrics");
    let route = warp::path!("metrics").and(warp::get()).then(move || {
        let (db, in_flight, handle) = (db.clone(), hash_in_flight.clone(), handle.clone());
        async move { warp::reply::Reply::into_response(render(&db, in_flight(), &handle).await) }
    });
    Ok((listener, route))
}

/// Gauges that are cheaper to read at scrape time than to keep updated.
async fn render(db: &Db, hash_in_flight: usize, handle: &PrometheusHandle) -> String {
    gauge!("kaggleingest_hash_in_flight").set(hash_in_flight as f64);
    match db.count_accounts().await {
        Ok(n) => gauge!("kaggleingest_accounts").set(n as f64),
        Err(e) => {
            tracing::warn!(error = %crate::report::Chain(&e), "counting accounts for metrics failed")
        }
    }
    handle.run_upkeep();
    handle.render()
}

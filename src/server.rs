//! Startup and the connection loop: open the store, bind, announce the real
//! address, serve HTTP/1.1 until SIGINT/SIGTERM, then drain and checkpoint.

use std::cell::RefCell;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hyper::body::Incoming;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower_service::Service;
use tracing::{Instrument, Level};
use warp::http::{HeaderName, HeaderValue};
use warp::reply::Response;
use warp::{Filter, Rejection};

use crate::client_ip::{self, Cidr, ClientIp};
use crate::config::{Settings, SignupMode};
use crate::connections::{self, OVER_CAP_RESPONSE, PerAddress};
use crate::db::Db;
use crate::handlers::App;
use crate::hasher::{DummyHash, Hasher};
use crate::ratelimit::Limiter;
use crate::report::Chain;
use crate::{error, routes, telemetry};

/// Metrics connections open at once; more wait in the kernel's backlog. A
/// scraper needs one. The cap keeps that listener, which `max_connections`
/// does not count, from spending the file descriptors the API needs.
const MAX_SCRAPERS: usize = 8;

/// How often the rate limiter forgets clients whose budget is full again.
const LIMITER_SWEEP: Duration = Duration::from_secs(60);

/// The headers read and written for every request, named once instead of
/// parsed from a string each time.
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Why the server could not start; one line, naming what is wrong.
#[derive(Debug)]
pub struct StartError(String);

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

/// Runs the server until a shutdown signal arrives.
pub async fn run(settings: Settings) -> Result<(), StartError> {
    // Caught before the database is opened, long before the startup line: a
    // supervisor (or a test) may signal as soon as it reads that line, and a
    // signal that beat the handler would kill the server without draining
    // it, or be lost for good where the parent left SIGTERM ignored.
    let shutdown =
        shutdown_signal().map_err(|e| StartError(format!("cannot catch SIGINT/SIGTERM: {e}")))?;
    // Under a file-size limit (`ulimit -f`, a container's), a write past it
    // must fail as an I/O error, which its requests answer with a 500 and
    // `/readyz` with a 503, rather than raise SIGXFSZ, which kills.
    // SAFETY: ignoring a signal installs no handler; nothing runs on arrival.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    run_until(settings, shutdown).await
}

/// Runs the server until `shutdown` completes, which may be before it
/// listens: startup can wait long (a PostgreSQL migration another node
/// holds, a SQLite file another process keeps locked) and must not outlast
/// a stop request.
pub async fn run_until(
    settings: Settings,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let mut shutdown = std::pin::pin!(shutdown);
    let (db, listener, app) = tokio::select! {
        started = start(&settings) => started?,
        () = &mut shutdown => {
            tracing::info!("stopped before listening");
            return Ok(());
        }
    };

    serve(listener, app, &settings, shutdown).await;

    if let Err(e) = db.checkpoint().await {
        tracing::warn!(error = %Chain(&e), "final WAL checkpoint failed; the WAL file is still valid");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Opens the store, binds and announces the real address.
async fn start(settings: &Settings) -> Result<(Db, TcpListener, Arc<App>), StartError> {
    let db = Db::open(&settings.db)
        .await
        .map_err(|e| StartError(Chain(&e).to_string()))?;
    if let Some(path) = db.sqlite_path() {
        warn_if_readable_by_others(path);
    }
    let listener = TcpListener::bind(settings.bind)
        .await
        .map_err(|e| StartError(format!("cannot listen on {}: {e}", settings.bind)))?;
    let local = listener
        .local_addr()
        .map_err(|e| StartError(format!("cannot read the bound address: {e}")))?;
    if settings.bcrypt_cost < 10 {
        tracing::warn!(
            bcrypt_cost = settings.bcrypt_cost,
            "bcrypt cost below 10 is for tests only: passwords are cheap to brute-force"
        );
    }
    raise_fd_limit(settings.max_connections);
    let app = build_app(settings, db.clone()).await?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        backend = settings.db.backend(),
        database = %settings.db,
        bcrypt_cost = settings.bcrypt_cost,
        "kaggleingest listening on http://{local}"
    );
    Ok((db, listener, app))
}

/// The shared state of the routes, with its background tasks started: the
/// hashing pool (warmed by the dummy hash), the rate limiters and their
/// sweeper, and the metrics listener when enabled.
async fn build_app(settings: &Settings, db: Db) -> Result<Arc<App>, StartError> {
    let hasher = Hasher::start(settings.hash_threads(), settings.hash_queue);
    let dummy_hash = DummyHash::prepare(settings.bcrypt_cost);
    if let Some(addr) = settings.metrics_bind {
        let pool = hasher.clone();
        let (listener, route) = telemetry::start(addr, db.clone(), move || pool.in_flight())
            .await
            .map_err(StartError)?;
        let timeout = Duration::from_secs(settings.client_timeout_secs);
        tokio::spawn(serve_metrics(listener, route, timeout));
    }
    let signup_limiter = Arc::new(Limiter::new(settings.signup_rate_limit));
    let rotate_limiter = Arc::new(Limiter::new(settings.rotate_rate_limit));
    let limiters = [Arc::clone(&signup_limiter), Arc::clone(&rotate_limiter)];
    tokio::spawn(async move {
        let mut sweep = tokio::time::interval(LIMITER_SWEEP);
        loop {
            sweep.tick().await;
            for limiter in &limiters {
                limiter.forget_idle();
            }
        }
    });
    Ok(Arc::new(App {
        db,
        hasher,
        bcrypt_cost: settings.bcrypt_cost,
        signup_limiter,
        rotate_limiter,
        dummy_hash,
        verify_deny_forbidden: settings.verify_deny_status == 403,
        verify_cost_header: settings.verify_cost_header,
        ignored_cost_logged: std::sync::Once::new(),
        client_timeout: Duration::from_secs(settings.client_timeout_secs),
        signups_open: settings.signups == SignupMode::Open,
        signup_email_domains: settings.signup_email_domains.clone(),
        page: crate::page::Page::from_settings(settings),
        shutting_down: AtomicBool::new(false),
    }))
}

/// Accepts connections until `shutdown`, then waits up to the grace period
/// for in-flight requests.
async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    settings: &Settings,
    shutdown: impl Future<Output = ()>,
) {
    let trusted: Arc<[Cidr]> = settings.trusted_proxies.clone().into();
    let routes = warp::service(routes::api(Arc::clone(&app)));
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let per_address = PerAddress::new(settings.max_connections_per_ip, Arc::clone(&trusted));
    let timeout = Duration::from_secs(settings.client_timeout_secs);
    let builder = connections::http1(timeout);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (slot, stream, peer) = tokio::select! {
            accepted = accept(&listener, &slots) => accepted,
            () = &mut shutdown => break,
        };
        let Some(counted) = per_address.admit(peer.ip()) else {
            // Over its address's cap: say so and close at once, freeing the
            // slot. A fresh socket's send buffer takes the whole answer.
            let _ = stream.try_write(OVER_CAP_RESPONSE);
            continue;
        };
        // One copy of the routes per connection, called by reference for
        // each of its requests: no per-request clone of the filter tree.
        let (routes, trusted) = (RefCell::new(routes.clone()), Arc::clone(&trusted));
        let service = hyper::service::service_fn(move |req| {
            handle(&mut *routes.borrow_mut(), req, peer, &trusted)
        });
        let connection =
            graceful.watch(builder.serve_connection(connections::io(stream, timeout), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection closed with an error");
            }
            drop((slot, counted));
        });
    }
    drop(listener);
    app.shutting_down.store(true, Ordering::Relaxed);
    tracing::info!("shutting down: finishing in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(Duration::from_secs(settings.shutdown_grace_secs)) => {
            tracing::warn!("grace period over; cutting the remaining connections");
        }
    }
}

/// The next connection, with its slot of `slots`. At the cap it stops
/// accepting: new clients wait in the kernel's backlog rather than costing
/// memory here.
async fn accept(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
) -> (OwnedSemaphorePermit, TcpStream, SocketAddr) {
    loop {
        let slot = Arc::clone(slots)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        match listener.accept().await {
            Ok((stream, peer)) => return (slot, stream, peer),
            Err(e) => {
                // Usually out of file descriptors: back off instead of spinning.
                let listener = listener.local_addr().ok();
                tracing::warn!(error = %e, ?listener, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves the metrics route until the process ends, `MAX_SCRAPERS`
/// connections at a time, each bounded like the API's, errors as JSON.
async fn serve_metrics<F>(listener: TcpListener, route: F, client_timeout: Duration)
where
    F: Filter<Extract = (Response,), Error = Rejection> + Clone + Send + Sync + 'static,
{
    let routes = warp::service(route.recover(error::recover).unify());
    let builder = connections::http1(client_timeout);
    let slots = Arc::new(Semaphore::new(MAX_SCRAPERS));
    loop {
        let (slot, stream, _) = accept(&listener, &slots).await;
        let routes = RefCell::new(routes.clone());
        let service = hyper::service::service_fn(move |req| routes.borrow_mut().call(req));
        let connection = builder.serve_connection(connections::io(stream, client_timeout), service);
        tokio::spawn(async move {
            let _ = connection.await;
            drop(slot);
        });
    }
}

/// Logs one request the same way at any level.
macro_rules! request_event {
    ($level:expr, $($fields:tt)*) => {
        tracing::event!($level, $($fields)*, "request")
    };
}

/// One request: tags it with its client and an id and hands it to the
/// routes (synchronously, so nothing is cloned for the future), then the
/// returned future logs and counts it. Never logs headers or bodies: they
/// carry keys and passwords.
fn handle<S>(
    routes: &mut S,
    mut req: hyper::Request<Incoming>,
    peer: SocketAddr,
    trusted: &[Cidr],
) -> impl Future<Output = Result<Response, Infallible>> + use<S>
where
    S: Service<hyper::Request<Incoming>, Response = Response, Error = Infallible>,
{
    let started = Instant::now();
    let method = req.method().clone();
    let route = routes::template(req.uri().path());
    let request_id = request_id(req.headers().get(&X_REQUEST_ID));
    let forwarded = req.headers().get_all(&X_FORWARDED_FOR);
    let client = client_ip::resolve(
        peer.ip(),
        forwarded.iter().filter_map(|v| v.to_str().ok()),
        trusted,
    );
    req.extensions_mut().insert(ClientIp(client));
    // Every line logged while the request is handled (a 500's cause above
    // all) carries its id. At ERROR level so the span exists whatever the
    // log filter lets through.
    let span = tracing::error_span!("request", request_id = %request_id);
    // Boxed: hyper keeps room for one request future per connection for the
    // connection's whole life, and warp's is kilobytes; idle connections
    // should cost a pointer, not that. Boxed where it is made, so those
    // kilobytes are not copied again on the way.
    let response = span
        .in_scope(|| Box::pin(routes.call(req)))
        .instrument(span);
    async move {
        let mut response = response.await?;
        let elapsed = started.elapsed();
        let status = response.status().as_u16();
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert(X_REQUEST_ID.clone(), value);
        }
        let quiet = matches!(route, "/healthz" | "/readyz");
        let fields = (method.as_str(), status, elapsed.as_micros() as u64);
        let client = ClientIp(client);
        if quiet {
            request_event!(Level::DEBUG, method = fields.0, route, status = fields.1, micros = fields.2, %client, request_id);
        } else {
            request_event!(Level::INFO, method = fields.0, route, status = fields.1, micros = fields.2, %client, request_id);
        }
        telemetry::request(method.as_str(), route, status, elapsed);
        Ok(response)
    }
}

/// The client's own `X-Request-Id` when it is a sane token (so traces join
/// up across a proxy), else a fresh one.
fn request_id(inbound: Option<&HeaderValue>) -> String {
    let sane = |s: &&str| {
        (1..=64).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    };
    match inbound.and_then(|v| v.to_str().ok()).filter(sane) {
        Some(id) => id.to_owned(),
        // 16 lowercase hex digits, as `{:016x}` writes them, cheaper.
        None => {
            let mut digits = [0; 16];
            hex::encode_to_slice(fresh_request_id().to_be_bytes(), &mut digits)
                .expect("8 bytes are 16 hex digits");
            String::from_utf8_lossy(&digits).into_owned()
        }
    }
}

/// A new request id without a syscall: a counter from a random start drawn
/// once per process, scrambled by SplitMix64's finalizer. The finalizer is a
/// bijection, so ids never repeat within a process; the random start makes a
/// repeat across restarts as unlikely as between random ids.
fn fresh_request_id() -> u64 {
    static START: LazyLock<u64> = LazyLock::new(|| {
        getrandom::u64().unwrap_or_else(|_| {
            // No OS randomness: the clock still differs between restarts.
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            now.as_nanos() as u64 ^ u64::from(std::process::id())
        })
    });
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut z = START.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A database we create is 0600; one made otherwise (an older release, a
/// `touch`, a copy) keeps its mode, and then every local user can read the
/// password hashes and emails in it. Say so at every start.
fn warn_if_readable_by_others(db: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(db) else {
        return;
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        tracing::warn!(
            database = %db.display(),
            mode = format!("{mode:o}"),
            "the database file is readable by other users; chmod 600 it (and its -wal and -shm)"
        );
    }
}

/// Each connection is a file descriptor; the common soft limit of 1024 would
/// cap us below `max_connections`, so raise it toward the hard limit.
fn raise_fd_limit(max_connections: usize) {
    let wanted = max_connections as libc::rlim_t + 256;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 || limit.rlim_cur >= wanted {
            return;
        }
        limit.rlim_cur = wanted.min(limit.rlim_max);
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur < wanted {
            tracing::warn!(
                open_files = limit.rlim_cur,
                max_connections,
                "the open-file limit is below max_connections; raise it (ulimit -n / LimitNOFILE)"
            );
        }
    }
}

/// Catches SIGINT and SIGTERM at once; the future completes on the first
/// one that arrives from then on.
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_request_ids_do_not_repeat() {
        let ids: std::collections::HashSet<u64> =
            (0..100_000).map(|_| fresh_request_id()).collect();
        assert_eq!(ids.len(), 100_000);
    }

    #[test]
    fn a_sane_client_id_is_kept_and_anything_else_replaced() {
        let kept = HeaderValue::from_static("abc-123_x.y");
        assert_eq!(request_id(Some(&kept)), "abc-123_x.y");
        let odd = HeaderValue::from_static("has space");
        assert_eq!(request_id(Some(&odd)).len(), 16);
        let fresh = request_id(None);
        assert_eq!(fresh.len(), 16);
        assert_eq!(
            fresh,
            format!("{:016x}", u64::from_str_radix(&fresh, 16).unwrap())
        );
    }
}

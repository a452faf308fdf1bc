//! Startup and the connection loop: open the store, bind, announce the real
//! address, serve HTTP/1.1 until SIGINT/SIGTERM, then drain and checkpoint.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower_service::Service;

use crate::config::Settings;
use crate::db::Db;
use crate::handlers::App;
use crate::hasher::Hasher;
use crate::password;
use crate::ratelimit::Limiter;
use crate::routes;

/// How often the rate limiter forgets clients whose budget is full again.
const LIMITER_SWEEP: Duration = Duration::from_secs(60);

/// The TCP peer of a request, put in its extensions for the routes.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

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
    run_until(settings, shutdown_signal()).await
}

/// Runs the server until `shutdown` completes.
pub async fn run_until(
    settings: Settings,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let db_path = settings.db.clone();
    let db = tokio::task::spawn_blocking(move || Db::open(&db_path))
        .await
        .map_err(|e| StartError(format!("opening the database failed: {e}")))?
        .map_err(|e| StartError(e.to_string()))?;
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
    let hasher = Hasher::start(settings.hash_workers, settings.hash_queue);
    let cost = settings.bcrypt_cost;
    let dummy_hash = hasher
        .run(move || password::dummy_hash(cost))
        .await
        .ok()
        .and_then(Result::ok)
        .ok_or_else(|| StartError("cannot compute a bcrypt hash at startup".into()))?;
    let limiters = [
        Arc::new(Limiter::new(settings.signup_rate_limit)),
        Arc::new(Limiter::new(settings.signup_rate_limit)),
    ];
    let app = App {
        db: db.clone(),
        hasher,
        bcrypt_cost: settings.bcrypt_cost,
        signup_limiter: Arc::clone(&limiters[0]),
        rotate_limiter: Arc::clone(&limiters[1]),
        dummy_hash: dummy_hash.into(),
        verify_deny_forbidden: settings.verify_deny_status == 403,
        trusted_proxies: settings.trusted_proxies.clone().into(),
        client_timeout: settings.client_timeout,
    };
    tokio::spawn(async move {
        let mut sweep = tokio::time::interval(LIMITER_SWEEP);
        loop {
            sweep.tick().await;
            for limiter in &limiters {
                limiter.forget_idle();
            }
        }
    });
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        database = %settings.db.display(),
        bcrypt_cost = settings.bcrypt_cost,
        "kaggleingest listening on http://{local}"
    );

    serve(listener, app, &settings, shutdown).await;

    if let Err(e) = db.checkpoint().await {
        tracing::warn!(error = %e, "final WAL checkpoint failed; the WAL file is still valid");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Accepts connections until `shutdown`, then waits up to the grace period
/// for in-flight requests.
async fn serve(
    listener: TcpListener,
    app: App,
    settings: &Settings,
    shutdown: impl Future<Output = ()>,
) {
    let routes = warp::service(routes::api(app));
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // At the cap, stop accepting: new clients wait in the kernel's backlog
        // rather than costing memory here.
        let accept = async {
            let slot = Arc::clone(&slots)
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            (slot, listener.accept().await)
        };
        let (slot, stream, peer) = tokio::select! {
            (slot, accepted) = accept => match accepted {
                Ok((stream, peer)) => (slot, stream, peer),
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let routes = routes.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(PeerAddr(peer));
            let method = req.method().clone();
            let path = req.uri().path().to_owned();
            let started = Instant::now();
            let mut routes = routes.clone();
            async move {
                let response = routes.call(req).await;
                if let Ok(response) = &response {
                    // Method, path, status and time only: headers carry keys.
                    tracing::info!(
                        %method,
                        path,
                        status = response.status().as_u16(),
                        micros = started.elapsed().as_micros() as u64,
                        client = %peer.ip(),
                        "request"
                    );
                }
                response
            }
        });
        let mut builder = http1::Builder::new();
        // The header timeout also runs while a keep-alive connection waits
        // for its next request, so it bounds idle connections too.
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(settings.client_timeout);
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection closed with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    tracing::info!("shutting down: finishing in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(settings.shutdown_grace) => {
            tracing::warn!("grace period over; cutting the remaining connections");
        }
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

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing a signal handler at startup");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

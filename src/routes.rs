//! warp filters only: which path and method reach which handler, and how the
//! body and the key header are extracted. What happens lives in `handlers`.

use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use warp::http::{HeaderMap, HeaderValue};
use warp::path::FullPath;
use warp::reply::Response;
use warp::{Filter, Rejection};

use crate::client_ip::ClientIp;
use crate::error::{self, AppError};
use crate::handlers::{self, App};
use crate::page;
use crate::ratelimit::{Decision, Limiter, RateInfo};

/// Largest request body accepted, chunked or not.
pub const BODY_LIMIT: usize = 16 * 1024;

/// Every path we serve, each spelled the one way it is served. A route whose
/// path is missing here is never reached (see `exact_path`).
const PATHS: [&str; 12] = [
    "/api/auth/signup",
    "/api/auth/me",
    "/api/auth/keys/rotate",
    "/api/auth/key",
    "/api/auth/verify",
    "/healthz",
    "/readyz",
    "/openapi.json",
    page::INDEX_PATH,
    page::SCRIPT_PATH,
    page::STYLE_PATH,
    page::ICON_PATH,
];

/// Every route, with every rejection turned into a JSON error.
pub fn api(app: Arc<App>) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    let routes = signup(app.clone())
        .or(me(app.clone()))
        .unify()
        .or(rotate(app.clone()))
        .unify()
        .or(revoke(app.clone()))
        .unify()
        .or(verify(app.clone()))
        .unify()
        .or(health(app.clone()))
        .unify()
        .or(page(app))
        .unify();
    exact_path().and(routes).recover(error::recover).unify()
}

/// Passes only a path in `PATHS`, byte for byte: `warp::path!` would also
/// take `/healthz/`, and a proxy that keeps clients away from
/// `/api/auth/verify` by exact match must not be walked around with
/// `/api/auth/verify/`. One check in front of all routes, so a respelled
/// path is an unknown path (404), whatever its method.
fn exact_path() -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::path::full()
        .and_then(|path: FullPath| async move {
            if PATHS.contains(&path.as_str()) {
                Ok(())
            } else {
                Err(warp::reject::not_found())
            }
        })
        .untuple_one()
}

/// The route template a path belongs to, for logs and metric labels: our
/// paths have no parameters, so a known path is its own template and
/// anything else is one label (never the raw path, which a client controls).
pub fn template(path: &str) -> &'static str {
    PATHS
        .into_iter()
        .find(|r| *r == path)
        .unwrap_or("unmatched")
}

/// `GET|HEAD /healthz`, `/readyz`, `/openapi.json`: for operators and
/// tools, never rate limited.
fn health(app: Arc<App>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    // Path before method: a POST to an unknown path must stay a 404.
    let healthz = warp::path!("healthz")
        .and(get_or_head())
        .map(handlers::healthz);
    let readyz = warp::path!("readyz")
        .and(get_or_head())
        .and(with_app(app))
        .then(handlers::readyz)
        .map(error::into_response);
    let openapi = warp::path!("openapi.json")
        .and(get_or_head())
        .map(handlers::openapi);
    healthz.or(readyz).unify().or(openapi).unify()
}

/// `POST /api/auth/signup`
fn signup(app: Arc<App>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let limiter = Arc::clone(&app.signup_limiter);
    warp::path!("api" / "auth" / "signup").and(limited_json_post(limiter, app, handlers::signup))
}

/// `POST /api/auth/keys/rotate`
fn rotate(app: Arc<App>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let limiter = Arc::clone(&app.rotate_limiter);
    warp::path!("api" / "auth" / "keys" / "rotate").and(limited_json_post(
        limiter,
        app,
        handlers::rotate,
    ))
}

/// A POST with a JSON body, counted against a per-client budget first, whose
/// every answer carries the budget's `X-RateLimit-*` headers.
fn limited_json_post<H, F>(
    limiter: Arc<Limiter>,
    app: Arc<App>,
    handler: H,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone
where
    H: Fn(Result<Bytes, AppError>, Arc<App>) -> F + Clone + Send + Sync,
    F: Future<Output = Result<Response, AppError>> + Send,
{
    warp::post()
        .and(rate_limited(limiter))
        .and(
            json_body(app.client_timeout)
                .and(with_app(app))
                .then(handler)
                .map(error::into_response),
        )
        .map(with_rate_headers)
}

/// `DELETE /api/auth/key`
fn revoke(app: Arc<App>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("api" / "auth" / "key")
        .and(warp::delete())
        .and(api_key())
        .and(with_app(app))
        .then(handlers::revoke)
        .map(error::into_response)
}

/// `GET|HEAD /api/auth/verify`, priced by `X-KaggleIngest-Cost`. The query
/// string is never read: Caddy's `forward_auth` forwards the client's.
fn verify(app: Arc<App>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("api" / "auth" / "verify")
        .and(get_or_head())
        .and(api_key())
        .and(cost_header())
        .and(with_app(app))
        .then(handlers::verify)
        .map(error::into_response)
}

/// `GET|HEAD /api/auth/me`
fn me(app: Arc<App>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("api" / "auth" / "me")
        .and(get_or_head())
        .and(api_key())
        .and(with_app(app))
        .then(handlers::me)
        .map(error::into_response)
}

/// `GET|HEAD /` and the page's assets, while `web_page` is on. Path before
/// method, so a POST to `/` is a 405 while the page is served and a 404 when
/// it is off.
fn page(app: Arc<App>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path::full()
        .and_then(move |path: FullPath| {
            let response = app
                .page
                .as_ref()
                .and_then(|page| page.respond(path.as_str()));
            async move { response.ok_or_else(warp::reject::not_found) }
        })
        .and(get_or_head())
}

/// GET, or HEAD, which every GET route answers alike: hyper sends the same
/// status and headers and leaves the body out.
fn get_or_head() -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::get().or(warp::head()).unify()
}

fn with_rate_headers(rate: Option<RateInfo>, mut response: Response) -> Response {
    if let Some(rate) = rate {
        rate.write_headers(response.headers_mut());
    }
    response
}

/// Counts the request against its client's budget: rejects with 429 when it
/// is spent, else yields the budget for the response headers (`None` when
/// limiting is off).
fn rate_limited(
    limiter: Arc<Limiter>,
) -> impl Filter<Extract = (Option<RateInfo>,), Error = Rejection> + Clone {
    client_ip().and_then(move |ip| {
        let decision = limiter.check(ip);
        async move {
            match decision {
                Decision::Unlimited => Ok(None),
                Decision::Allowed(info) => Ok(Some(info)),
                Decision::Denied(info, retry_after_secs) => {
                    Err(warp::reject::custom(AppError::RateLimited {
                        info,
                        retry_after_secs,
                    }))
                }
            }
        }
    })
}

fn with_app(app: Arc<App>) -> impl Filter<Extract = (Arc<App>,), Error = Infallible> + Clone {
    warp::any().map(move || app.clone())
}

/// The client's address, resolved once per request by the server (the TCP
/// peer, or what trusted proxies say).
fn client_ip() -> impl Filter<Extract = (IpAddr,), Error = Infallible> + Clone {
    warp::ext::optional::<ClientIp>().map(|client: Option<ClientIp>| {
        // Only absent when the filter runs outside our server (warp::test).
        client.map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0)
    })
}

/// The raw `X-API-Key` header, if any. Only the header is read: a key in the
/// query string would end up in proxy and browser logs.
fn api_key() -> impl Filter<Extract = (Option<HeaderValue>,), Error = Infallible> + Clone {
    warp::header::value("x-api-key")
        .map(Some)
        .or(warp::any().map(|| None))
        .unify()
}

/// Every `X-KaggleIngest-Cost` value, in order: the handler refuses more
/// than one (warp's `header` filters show only the first).
fn cost_header() -> impl Filter<Extract = (Vec<HeaderValue>,), Error = Infallible> + Clone {
    warp::header::headers_cloned().map(|headers: HeaderMap| {
        headers
            .get_all(handlers::COST_HEADER)
            .iter()
            .cloned()
            .collect()
    })
}

/// A body declared as JSON, read in full under `BODY_LIMIT`. Parsing is the
/// handler's job, so every malformed body gets our own 400 `detail`. A bad
/// body is handed on as an error, not a rejection, so the response still
/// passes through the route's own wrapping (its rate-limit headers).
fn json_body(
    timeout: Duration,
) -> impl Filter<Extract = (Result<Bytes, AppError>,), Error = Rejection> + Clone {
    warp::header::optional::<String>("content-type")
        .and(warp::header::optional::<u64>("content-length"))
        .and(warp::body::stream())
        .then(
            move |content_type: Option<String>, declared: Option<u64>, body| async move {
                if !content_type.as_deref().is_some_and(is_json) {
                    return Err(AppError::UnsupportedMediaType);
                }
                // Refused before a byte is read (and before hyper answers an
                // `Expect: 100-continue`): waiting for a body we would refuse
                // only holds the connection until the timeout.
                if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
                    return Err(AppError::PayloadTooLarge { limit: BODY_LIMIT });
                }
                // A trickled body would hold a connection (and its memory) forever.
                tokio::time::timeout(timeout, read_capped(body))
                    .await
                    .unwrap_or(Err(AppError::BodyTimeout))
            },
        )
}

/// `application/json`, any case, parameters (charset) allowed.
fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
}

/// Collects the body, stopping as soon as it passes the limit so a huge or
/// endless chunked body costs at most `BODY_LIMIT` bytes of memory.
async fn read_capped<S, B>(body: S) -> Result<Bytes, AppError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let mut body = std::pin::pin!(body);
    let mut collected = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let mut chunk =
            chunk.map_err(|_| AppError::BadRequest("Could not read request body".into()))?;
        if collected.len() + chunk.remaining() > BODY_LIMIT {
            return Err(AppError::PayloadTooLarge { limit: BODY_LIMIT });
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            collected.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(collected.freeze())
}

#[cfg(test)]
mod tests {
    use super::is_json;

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(!is_json("application/x-www-form-urlencoded"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/jsonp"));
    }
}

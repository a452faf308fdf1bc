//! warp filters only: which path and method reach which handler, and how the
//! body and the key header are extracted. What happens lives in `handlers`.

use std::convert::Infallible;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use warp::http::HeaderValue;
use warp::reply::Response;
use warp::{Filter, Rejection};

use crate::error::{self, AppError};
use crate::handlers::{self, App};

/// Largest request body accepted, chunked or not.
pub const BODY_LIMIT: usize = 16 * 1024;

/// Every route, with every rejection turned into a JSON error.
pub fn api(app: App) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    signup(app.clone())
        .or(me(app))
        .unify()
        .recover(error::recover)
        .unify()
}

/// `POST /api/auth/signup`
fn signup(app: App) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("api" / "auth" / "signup")
        .and(warp::post())
        .and(json_body())
        .and(with_app(app))
        .then(handlers::signup)
        .map(respond)
}

/// `GET /api/auth/me`
fn me(app: App) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("api" / "auth" / "me")
        .and(warp::get())
        .and(api_key())
        .and(with_app(app))
        .then(handlers::me)
        .map(respond)
}

fn respond(result: Result<Response, AppError>) -> Response {
    error::into_response(result)
}

fn with_app(app: App) -> impl Filter<Extract = (App,), Error = Infallible> + Clone {
    warp::any().map(move || app.clone())
}

/// The raw `X-API-Key` header, if any. Only the header is read: a key in the
/// query string would end up in proxy and browser logs.
fn api_key() -> impl Filter<Extract = (Option<HeaderValue>,), Error = Infallible> + Clone {
    warp::header::value("x-api-key")
        .map(Some)
        .or(warp::any().map(|| None))
        .unify()
}

/// A body declared as JSON, read in full under `BODY_LIMIT`. Parsing is the
/// handler's job, so every malformed body gets our own 400 `detail`.
fn json_body() -> impl Filter<Extract = (Bytes,), Error = Rejection> + Clone {
    warp::header::optional::<String>("content-type")
        .and_then(|content_type: Option<String>| async move {
            if content_type.as_deref().is_some_and(is_json) {
                Ok(())
            } else {
                Err(warp::reject::custom(AppError::UnsupportedMediaType))
            }
        })
        .untuple_one()
        .and(warp::body::stream())
        .and_then(|body| async move { read_capped(body).await.map_err(warp::reject::custom) })
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

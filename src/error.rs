//! The one error type of the HTTP API, and the one place that turns errors
//! (ours and warp's rejections) into a status and a `{"detail": ...}` body.

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::{Reply, Response};

use crate::db::DbError;
use crate::hasher::HashError;
use crate::password::PasswordError;
use crate::ratelimit::RateInfo;
use crate::report::Chain;
use crate::telemetry;

/// Everything a request can fail with. The variant decides the status; the
/// `detail` strings of the documented contract live here and nowhere else.
#[derive(Debug, Clone)]
pub enum AppError {
    /// 400 with a message that tells the client what to fix.
    BadRequest(String),
    /// 400: the email failed validation.
    InvalidEmail,
    /// 400: the password breaks a rule (documented strings).
    Password(PasswordError),
    /// 401: no `X-API-Key` header (documented string).
    MissingKey,
    /// 401: email/password pair does not match (the same for either half).
    BadCredentials,
    /// 402 (or 403 when operators ask for it, for nginx `auth_request`).
    InsufficientCredits { as_forbidden: bool },
    /// 403: unknown or malformed key (documented string).
    InvalidKey,
    /// 404 for any path we do not serve.
    NotFound,
    /// 405: the path exists, the method does not.
    MethodNotAllowed,
    /// 409: the normalized email is taken (documented string).
    EmailTaken,
    /// 413: body above the cap.
    PayloadTooLarge { limit: usize },
    /// 415: body not declared as JSON.
    UnsupportedMediaType,
    /// 500 on signup (documented prefix) with a fixed reason: the cause goes
    /// to the log, once, when the answer is made; never to the client.
    SignupFailed(Cause),
    /// 500 anywhere else, logged the same way.
    Internal(Cause),
    /// 408: the body did not arrive within the client timeout.
    BodyTimeout,
    /// 429: this client used its budget (documented `detail` shape).
    RateLimited {
        info: RateInfo,
        retry_after_secs: u64,
    },
    /// 403: `signups = "closed"`.
    SignupsClosed,
    /// 403: the email's domain is not in `signup_email_domains`.
    EmailDomainNotAllowed,
    /// 503 from /readyz, with the reason.
    NotReady(&'static str),
    /// 503: the hashing queue is full; retry after the given seconds.
    Busy { retry_after_secs: u64 },
}

impl warp::reject::Reject for AppError {}

#[derive(Serialize)]
struct Detail<'a> {
    detail: &'a str,
}

impl AppError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::BadRequest(_) | AppError::InvalidEmail | AppError::Password(_) => {
                StatusCode::BAD_REQUEST
            }
            AppError::MissingKey | AppError::BadCredentials => StatusCode::UNAUTHORIZED,
            AppError::InsufficientCredits {
                as_forbidden: false,
            } => StatusCode::PAYMENT_REQUIRED,
            AppError::InsufficientCredits { as_forbidden: true } => StatusCode::FORBIDDEN,
            AppError::InvalidKey | AppError::SignupsClosed | AppError::EmailDomainNotAllowed => {
                StatusCode::FORBIDDEN
            }
            AppError::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::NotFound => StatusCode::NOT_FOUND,
            AppError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            AppError::EmailTaken => StatusCode::CONFLICT,
            AppError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::SignupFailed(_) | AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            AppError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            AppError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            AppError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The human-readable `detail` string.
    pub fn detail(&self) -> String {
        match self {
            AppError::BadRequest(msg) => msg.clone(),
            AppError::InvalidEmail => "Invalid email address".into(),
            AppError::Password(e) => e.to_string(),
            AppError::MissingKey => {
                "Missing X-API-Key header. Get your key at https://kaggleingest.com/dashboard"
                    .into()
            }
            AppError::InvalidKey => "Invalid API key".into(),
            AppError::SignupsClosed => "Signups are disabled on this server".into(),
            AppError::EmailDomainNotAllowed => "Signups are not open to this email domain".into(),
            AppError::NotReady(reason) => (*reason).into(),
            AppError::BadCredentials => "Invalid email or password".into(),
            AppError::InsufficientCredits { .. } => "Insufficient credits".into(),
            AppError::NotFound => "Not Found".into(),
            AppError::MethodNotAllowed => "Method Not Allowed".into(),
            AppError::EmailTaken => "Email already registered".into(),
            AppError::PayloadTooLarge { limit } => {
                format!("Request body too large (limit {limit} bytes)")
            }
            AppError::UnsupportedMediaType => "Content-Type must be application/json".into(),
            AppError::SignupFailed(_) => "Signup failed: internal error".into(),
            AppError::Internal(_) => "Internal server error".into(),
            AppError::BodyTimeout => "Request body not received in time".into(),
            AppError::RateLimited { info, .. } => {
                format!("Rate limit exceeded: {} per 1 minute", info.limit)
            }
            AppError::Busy { .. } => "Server busy, retry shortly".into(),
        }
    }
}

impl Reply for AppError {
    fn into_response(self) -> Response {
        if let Some(reason) = self.auth_failure() {
            telemetry::auth_failure(reason);
        }
        if let AppError::Internal(cause) | AppError::SignupFailed(cause) = &self {
            // The one place a 500's cause is logged: inside the request's
            // span, so the line carries the id the client got.
            tracing::error!(status = self.status().as_u16(), error = %cause, "request failed");
        }
        let mut response = json_response(
            self.status(),
            &Detail {
                detail: &self.detail(),
            },
        );
        let headers = response.headers_mut();
        if self.leaves_body_unread() {
            // The rest of the body is still on the wire, so the connection
            // cannot carry another request: say so, or a keep-alive client
            // would send its next request into a closing socket.
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        match self {
            AppError::Busy { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            }
            AppError::RateLimited {
                info,
                retry_after_secs,
            } => {
                info.write_headers(headers);
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            }
            AppError::InsufficientCredits { as_forbidden: true } => {
                // Tells a 403 for credits from a 403 for a bad key.
                headers.insert("x-kaggleingest-deny", HeaderValue::from_static("credits"));
            }
            _ => {}
        }
        response
    }
}

impl AppError {
    /// Whether this answer is given before the request body was read in full.
    fn leaves_body_unread(&self) -> bool {
        matches!(
            self,
            AppError::RateLimited { .. }
                | AppError::PayloadTooLarge { .. }
                | AppError::UnsupportedMediaType
                | AppError::BodyTimeout
        )
    }

    /// The metric label of an authentication failure, if this is one.
    fn auth_failure(&self) -> Option<&'static str> {
        match self {
            AppError::MissingKey => Some("missing_key"),
            AppError::InvalidKey => Some("invalid_key"),
            AppError::BadCredentials => Some("bad_credentials"),
            AppError::InsufficientCredits { .. } => Some("insufficient_credits"),
            _ => None,
        }
    }
}

/// A JSON response with the given status. (Our bodies are plain structs of
/// strings and numbers, whose serialization cannot fail.)
pub fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    let mut response = warp::reply::json(body).into_response();
    *response.status_mut() = status;
    response
}

/// Folds a handler's result into one response, so domain errors never become
/// rejections that `.or()` would hand on to sibling routes.
pub fn into_response<T: Reply>(result: Result<T, AppError>) -> Response {
    match result {
        Ok(reply) => reply.into_response(),
        Err(err) => err.into_response(),
    }
}

/// Turns every rejection into a JSON error, so no plain-text body from warp
/// ever reaches a client.
pub async fn recover(rejection: warp::Rejection) -> Result<Response, Infallible> {
    let err = if let Some(err) = rejection.find::<AppError>() {
        err.clone()
    } else if rejection.is_not_found() {
        AppError::NotFound
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        AppError::MethodNotAllowed
    } else if let Some(e) = rejection.find::<warp::reject::InvalidHeader>() {
        AppError::BadRequest(format!("Invalid header: {}", e.name()))
    } else if rejection.find::<warp::reject::InvalidQuery>().is_some() {
        AppError::BadRequest("Invalid query string".into())
    } else {
        AppError::Internal(Cause::from(format!("unhandled rejection: {rejection:?}")))
    };
    Ok(err.into_response())
}

/// What made a request fail inside: an error and its sources, shown as one
/// chain (`outer: inner: innermost`) in the log. Shared, so a rejection
/// carrying it can be cloned.
#[derive(Clone)]
pub struct Cause(Arc<dyn std::error::Error + Send + Sync>);

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Chain(&*self.0).fmt(f)
    }
}

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cause({self})")
    }
}

impl<E: Into<Box<dyn std::error::Error + Send + Sync>>> From<E> for Cause {
    fn from(e: E) -> Self {
        Cause(Arc::from(e.into()))
    }
}

impl AppError {
    /// An internal failure with its cause.
    pub fn internal(cause: impl Into<Cause>) -> AppError {
        AppError::Internal(cause.into())
    }

    /// The same error as signup answers it: its 500 has its own `detail`.
    pub fn in_signup(self) -> AppError {
        match self {
            AppError::Internal(cause) => AppError::SignupFailed(cause),
            other => other,
        }
    }
}

impl From<PasswordError> for AppError {
    fn from(e: PasswordError) -> Self {
        AppError::Password(e)
    }
}

impl From<DbError> for AppError {
    fn from(e: DbError) -> Self {
        AppError::internal(e)
    }
}

impl From<HashError> for AppError {
    fn from(e: HashError) -> Self {
        match e {
            // A full queue is shed, not failed: retry in a few seconds.
            HashError::Busy => AppError::Busy {
                retry_after_secs: BUSY_RETRY_AFTER_SECS,
            },
            HashError::Unavailable => AppError::internal("the hashing pool is unavailable"),
        }
    }
}

impl From<getrandom::Error> for AppError {
    fn from(e: getrandom::Error) -> Self {
        AppError::internal(format!("cannot draw a key: {e}"))
    }
}

/// Seconds a client shed with 503 is told to wait.
const BUSY_RETRY_AFTER_SECS: u64 = 5;

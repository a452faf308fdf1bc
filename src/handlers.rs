//! What each endpoint does: validate, call `db`, `keys`, `password`, reply.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Map, Value};
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;

use crate::client_ip::Cidr;
use crate::db::{Db, Inserted, NewAccount};
use crate::email::Email;
use crate::error::{AppError, json_response};
use crate::hasher::{HashError, Hasher};
use crate::keys::{self, ApiKey, KeyDigest};
use crate::password::Password;
use crate::ratelimit::Limiter;

/// Shared state of the running server; cheap to clone into each request.
#[derive(Clone)]
pub struct App {
    /// The store.
    pub db: Db,
    /// Where bcrypt runs.
    pub hasher: Hasher,
    /// Cost of new password hashes.
    pub bcrypt_cost: u32,
    /// Per-client budget for signups.
    pub limiter: Arc<Limiter>,
    /// Proxies allowed to name the client.
    pub trusted_proxies: Arc<[Cidr]>,
    /// How long a client may take to send a body.
    pub client_timeout: Duration,
}

/// Seconds a client shed with 503 is told to wait.
const BUSY_RETRY_AFTER_SECS: u64 = 5;

#[derive(Serialize)]
struct SignupResponse<'a> {
    message: &'a str,
    api_key: &'a str,
    instructions: &'a str,
}

/// `POST /api/auth/signup`: create an account and show its key once.
pub async fn signup(body: Bytes, app: App) -> Result<Response, AppError> {
    let (email, password) = parse_signup(&body)?;
    // Spares bcrypt for the obvious duplicate; the UNIQUE constraint below
    // still decides races between concurrent signups.
    if app.db.email_exists(&email).await.map_err(signup_failed)? {
        return Err(AppError::EmailTaken);
    }
    let cost = app.bcrypt_cost;
    let password_hash = app
        .hasher
        .run(move || password.hash(cost))
        .await
        .map_err(|e| match e {
            HashError::Busy => AppError::Busy {
                retry_after_secs: BUSY_RETRY_AFTER_SECS,
            },
            HashError::Unavailable => signup_failed("hashing pool unavailable"),
        })?
        .map_err(signup_failed)?;
    let key = ApiKey::generate().map_err(signup_failed)?;
    let account = NewAccount {
        email,
        password_hash,
        key_digest: key.digest(),
    };
    match app
        .db
        .insert_account(account)
        .await
        .map_err(signup_failed)?
    {
        Inserted::EmailTaken => Err(AppError::EmailTaken),
        Inserted::Created => {
            let mut response = json_response(
                StatusCode::OK,
                &SignupResponse {
                    message: "Account created successfully",
                    api_key: key.expose(),
                    instructions: "Add 'X-API-Key: <your_key>' header to all API requests",
                },
            );
            // The key is shown once: no cache may keep a copy.
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok(response)
        }
    }
}

/// `GET /api/auth/me`: the account behind the key. Never spends credits.
pub async fn me(key: Option<HeaderValue>, app: App) -> Result<Response, AppError> {
    let digest = authenticate(key.as_ref())?;
    match app.db.account_by_key(digest).await {
        Ok(Some(account)) => Ok(json_response(StatusCode::OK, &account)),
        Ok(None) => Err(AppError::InvalidKey),
        Err(e) => {
            tracing::error!(error = %e, "key lookup failed");
            Err(AppError::Internal)
        }
    }
}

/// The digest of a presented key: 401 when absent, 403 when it cannot be
/// one of ours (checked before any database work).
fn authenticate(header: Option<&HeaderValue>) -> Result<KeyDigest, AppError> {
    let raw = match header {
        Some(value) if !value.is_empty() => value,
        _ => return Err(AppError::MissingKey),
    };
    match raw.to_str() {
        Ok(key) if keys::is_well_formed(key) => Ok(KeyDigest::of(key)),
        _ => Err(AppError::InvalidKey),
    }
}

/// Logs the cause and answers the documented 500 with a short, fixed reason:
/// no SQL, path or library message reaches the client.
fn signup_failed(cause: impl std::fmt::Display) -> AppError {
    tracing::error!(error = %cause, "signup failed");
    AppError::SignupFailed("internal error")
}

/// Parses the signup body into a validated email and password.
fn parse_signup(body: &[u8]) -> Result<(Email, Password), AppError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| AppError::BadRequest("Request body must be valid JSON".into()))?;
    let Value::Object(fields) = value else {
        return Err(AppError::BadRequest(
            "Request body must be a JSON object".into(),
        ));
    };
    let email = string_field(&fields, "email")?;
    let password = string_field(&fields, "password")?;
    let email = Email::parse(email).ok_or(AppError::InvalidEmail)?;
    let password = Password::parse(password.to_owned())?;
    Ok((email, password))
}

fn string_field<'a>(fields: &'a Map<String, Value>, name: &str) -> Result<&'a str, AppError> {
    match fields.get(name) {
        None | Some(Value::Null) => {
            Err(AppError::BadRequest(format!("Field '{name}' is required")))
        }
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(AppError::BadRequest(format!(
            "Field '{name}' must be a string"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detail(body: &str) -> String {
        parse_signup(body.as_bytes()).unwrap_err().detail()
    }

    #[test]
    fn names_the_problem_with_the_body() {
        assert_eq!(detail("{"), "Request body must be valid JSON");
        assert_eq!(detail("[1]"), "Request body must be a JSON object");
        assert_eq!(
            detail(r#"{"password":"longenough"}"#),
            "Field 'email' is required"
        );
        assert_eq!(
            detail(r#"{"email":5,"password":"longenough"}"#),
            "Field 'email' must be a string"
        );
        assert_eq!(
            detail(r#"{"email":"a@b.co"}"#),
            "Field 'password' is required"
        );
        assert_eq!(
            detail(r#"{"email":"nope","password":"longenough"}"#),
            "Invalid email address"
        );
        assert_eq!(
            detail(r#"{"email":"a@b.co","password":"short"}"#),
            "Password must be at least 8 characters"
        );
    }

    #[test]
    fn key_header_classes() {
        assert!(matches!(authenticate(None), Err(AppError::MissingKey)));
        let empty = HeaderValue::from_static("");
        assert!(matches!(
            authenticate(Some(&empty)),
            Err(AppError::MissingKey)
        ));
        let bad = HeaderValue::from_static("ki_short");
        assert!(matches!(
            authenticate(Some(&bad)),
            Err(AppError::InvalidKey)
        ));
        let opaque = HeaderValue::from_bytes(b"ki_\xff").unwrap();
        assert!(matches!(
            authenticate(Some(&opaque)),
            Err(AppError::InvalidKey)
        ));
    }
}

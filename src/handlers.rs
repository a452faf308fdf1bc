//! What each endpoint does: validate, call `db`, `keys`, `password`, reply.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::{Reply, Response};

use crate::account::{Account, NewAccount, Tier};
use crate::db::{Db, Inserted, Spend};
use crate::email::Email;
use crate::error::{AppError, json_response};
use crate::hasher::{DummyHash, Hasher};
use crate::keys::{self, ApiKey, KeyDigest};
use crate::password::{self, Password};
use crate::ratelimit::Limiter;
use crate::report::Chain;
use crate::telemetry;

/// Shared state of the running server, shared as one `Arc` so a request
/// costs one reference count, not one per field.
pub struct App {
    /// The store.
    pub db: Db,
    /// Where bcrypt runs.
    pub hasher: Hasher,
    /// Cost of new password hashes.
    pub bcrypt_cost: u32,
    /// Per-client budget for signups.
    pub signup_limiter: Arc<Limiter>,
    /// Per-client budget for key rotations (password guesses).
    pub rotate_limiter: Arc<Limiter>,
    /// A bcrypt hash at the configured cost, verified against when the email
    /// is unknown so that answer takes as long as a wrong password.
    pub dummy_hash: DummyHash,
    /// Answer "not enough credits" on verify with 403 instead of 402.
    pub verify_deny_forbidden: bool,
    /// Price verifies by `X-KaggleIngest-Cost` (`verify_cost_header`).
    pub verify_cost_header: bool,
    /// Whether an ignored cost header has been logged yet (once is enough).
    pub ignored_cost_logged: std::sync::Once,
    /// How long a client may take to send a body.
    pub client_timeout: Duration,
    /// False when `signups = "closed"`.
    pub signups_open: bool,
    /// Email domains allowed to sign up (lowercase); empty allows all.
    pub signup_email_domains: Vec<String>,
    /// The signup page, rendered at startup; `None` with `web_page = false`.
    pub page: Option<crate::page::Page>,
    /// Set once shutdown begins, so /readyz turns 503 for load balancers.
    pub shutting_down: AtomicBool,
}

/// The OpenAPI document of this API.
const OPENAPI: &str = include_str!("openapi.json");
/// How long /readyz waits for the database.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Serialize)]
struct KeyResponse<'a> {
    message: &'a str,
    api_key: &'a str,
    instructions: &'a str,
}

#[derive(Serialize)]
struct Message<'a> {
    message: &'a str,
}

/// The body of `GET /api/auth/me`.
#[derive(Serialize)]
struct MeBody<'a> {
    email: &'a str,
    tier: Tier,
    credits: i64,
    created_at: &'a str,
}

impl<'a> From<&'a Account> for MeBody<'a> {
    fn from(a: &'a Account) -> Self {
        MeBody {
            email: &a.email,
            tier: a.tier,
            credits: a.credits,
            created_at: &a.created_at,
        }
    }
}

/// `POST /api/auth/signup`: create an account and show its key once.
pub async fn signup(body: Result<Bytes, AppError>, app: Arc<App>) -> Result<Response, AppError> {
    create_account(body, app).await.map_err(AppError::in_signup)
}

async fn create_account(
    body: Result<Bytes, AppError>,
    app: Arc<App>,
) -> Result<Response, AppError> {
    if !app.signups_open {
        return Err(AppError::SignupsClosed);
    }
    let (email, password) = credentials_body(&body?)?;
    let email = Email::parse(&email).ok_or(AppError::InvalidEmail)?;
    if !app.signup_email_domains.is_empty()
        && !app
            .signup_email_domains
            .iter()
            .any(|d| *d == email.domain())
    {
        return Err(AppError::EmailDomainNotAllowed);
    }
    let password = Password::parse(password)?;
    // Spares bcrypt for the obvious duplicate; the UNIQUE constraint below
    // still decides races between concurrent signups.
    if app.db.email_exists(&email).await? {
        return Err(AppError::EmailTaken);
    }
    let cost = app.bcrypt_cost;
    let password_hash = app
        .hasher
        .run(move || password.hash(cost))
        .await?
        .map_err(AppError::internal)?;
    let (account, key) = NewAccount::issue(email, password_hash)?;
    match app.db.insert_account(account).await? {
        Inserted::EmailTaken => Err(AppError::EmailTaken),
        Inserted::Created => {
            telemetry::signup();
            Ok(key_response("Account created successfully", &key))
        }
    }
}

/// `POST /api/auth/keys/rotate`: email and password in, a new key out; the
/// old key stops working with the commit.
pub async fn rotate(body: Result<Bytes, AppError>, app: Arc<App>) -> Result<Response, AppError> {
    let (email, candidate) = credentials_body(&body?)?;
    let account = match Email::parse(&email) {
        Some(email) => app.db.credentials(&email).await?,
        None => None,
    };
    // An unknown email still costs one bcrypt verification, against a dummy
    // hash of the same cost, so timing does not reveal which emails exist.
    let hash: Arc<str> = match &account {
        Some(found) => found.password_hash.as_str().into(),
        None => app.dummy_hash.get().await?,
    };
    let matches = app
        .hasher
        .run(move || password::verify(&candidate, &hash))
        .await?;
    let Some(checked) = account.filter(|_| matches) else {
        return Err(AppError::BadCredentials);
    };
    let key = ApiKey::generate()?;
    if !app.db.replace_key(checked, key.digest()).await? {
        // Deleted, its password changed, or its key rotated or revoked by
        // another request while we were verifying: only one of two
        // concurrent rotations gets a key, and that key works.
        return Err(AppError::BadCredentials);
    }
    Ok(key_response("API key rotated", &key))
}

/// `DELETE /api/auth/key`: the presented key stops working everywhere.
pub async fn revoke(key: Option<HeaderValue>, app: Arc<App>) -> Result<Response, AppError> {
    let digest = authenticate(key.as_ref())?;
    if app.db.revoke_key(digest).await? {
        Ok(json_response(
            StatusCode::OK,
            &Message {
                message: "API key revoked",
            },
        ))
    } else {
        Err(AppError::InvalidKey)
    }
}

/// The request header that prices a verify, read only with
/// `verify_cost_header` on. Only the proxy sets it (and overwrites whatever
/// the client sent); absent means 1.
pub const COST_HEADER: &str = "x-kaggleingest-cost";
const COST_INVALID: &str =
    "X-KaggleIngest-Cost must be a whole number of credits from 0 to 4294967295, digits only";
const COST_REPEATED: &str = "X-KaggleIngest-Cost must be given at most once";

/// `GET|HEAD /api/auth/verify`: for a reverse proxy's auth request.
/// Spends the price (see `price`) atomically and names the account in
/// response headers; the body is empty. The query string is never read: a
/// proxy may forward the client's, and the client must never choose the
/// price.
pub async fn verify(
    key: Option<HeaderValue>,
    cost_header: Vec<HeaderValue>,
    app: Arc<App>,
) -> Result<Response, AppError> {
    let digest = authenticate(key.as_ref())?;
    let cost = price(&app, &cost_header)?;
    match app.db.spend(digest, cost).await? {
        Spend::Spent(account) => {
            let mut response = warp::reply().into_response();
            let headers = response.headers_mut();
            // Clients that read header bytes as Latin-1 would garble UTF-8:
            // percent-encode (RFC 3986, UTF-8 bytes) everything outside
            // printable ASCII, and `%` so decoding is exact. ASCII addresses
            // without `%` pass unchanged; `unquote` / `decodeURIComponent` decode.
            const NOT_HEADER_SAFE: &percent_encoding::AsciiSet =
                &percent_encoding::CONTROLS.add(b'%');
            let email = percent_encoding::utf8_percent_encode(&account.email, NOT_HEADER_SAFE);
            headers.insert(
                "x-kaggleingest-email",
                HeaderValue::from_str(&email.to_string()).map_err(AppError::internal)?,
            );
            headers.insert(
                "x-kaggleingest-tier",
                HeaderValue::from_static(account.tier.as_str()),
            );
            headers.insert(
                "x-kaggleingest-credits-remaining",
                HeaderValue::from(account.credits),
            );
            Ok(response)
        }
        Spend::Insufficient => Err(AppError::InsufficientCredits {
            as_forbidden: app.verify_deny_forbidden,
        }),
        Spend::UnknownKey => Err(AppError::InvalidKey),
    }
}

/// `GET /healthz`: the process is up. Touches nothing.
pub fn healthz() -> Response {
    json_response(StatusCode::OK, &serde_json::json!({"status": "ok"}))
}

/// `GET /readyz`: ready for traffic: the database answers and no shutdown
/// has begun.
pub async fn readyz(app: Arc<App>) -> Result<Response, AppError> {
    if app.shutting_down.load(Ordering::Relaxed) {
        return Err(AppError::NotReady("Shutting down"));
    }
    match tokio::time::timeout(READY_TIMEOUT, app.db.ping()).await {
        Ok(Ok(())) => Ok(json_response(
            StatusCode::OK,
            &serde_json::json!({"status": "ready"}),
        )),
        Ok(Err(e)) => {
            tracing::warn!(error = %Chain(&e), "readiness check failed");
            Err(AppError::NotReady("Database unavailable"))
        }
        Err(_) => Err(AppError::NotReady("Database did not answer in time")),
    }
}

/// `GET /openapi.json`
pub fn openapi() -> Response {
    let mut response = Response::new(OPENAPI.into());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// `GET /api/auth/me`: the account behind the key. Never spends credits.
pub async fn me(key: Option<HeaderValue>, app: Arc<App>) -> Result<Response, AppError> {
    let digest = authenticate(key.as_ref())?;
    match app.db.account_by_key(digest).await? {
        Some(account) => Ok(json_response(StatusCode::OK, &MeBody::from(&account))),
        None => Err(AppError::InvalidKey),
    }
}

/// The 200 that shows a key, once: no cache may keep a copy.
fn key_response(message: &str, key: &ApiKey) -> Response {
    let mut response = json_response(
        StatusCode::OK,
        &KeyResponse {
            message,
            api_key: key.expose(),
            instructions: "Add 'X-API-Key: <your_key>' header to all API requests",
        },
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// What a verify costs. Reading the cost header is opt-in: a proxy config
/// written before the header existed passes the client's own copy on, and
/// that client would name its price. Off, every verify costs 1 and a header
/// is ignored (logged once, for the operator who set prices and forgot the
/// setting).
fn price(app: &App, cost_header: &[HeaderValue]) -> Result<u32, AppError> {
    if app.verify_cost_header {
        return parse_cost(cost_header);
    }
    if !cost_header.is_empty() {
        app.ignored_cost_logged.call_once(|| {
            tracing::warn!(
                "X-KaggleIngest-Cost ignored: every verify costs 1 until \
                 verify_cost_header = true (turn it on once your proxy sets the header)"
            );
        });
    }
    Ok(1)
}

/// The price in `X-KaggleIngest-Cost` values: 1 when there are none; else
/// exactly one value of plain ASCII digits, without sign, spaces or leading
/// zeros, within u32. Anything looser could be read one way by a proxy or a
/// log and another way here; two values could each come from someone else.
fn parse_cost(values: &[HeaderValue]) -> Result<u32, AppError> {
    let raw = match values {
        [] => return Ok(1),
        [one] => one.as_bytes(),
        _ => return Err(AppError::BadRequest(COST_REPEATED.into())),
    };
    let canonical = match raw {
        [b'0'] => true,
        [b'1'..=b'9', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    std::str::from_utf8(raw)
        .ok()
        .filter(|_| canonical)
        .and_then(|digits| digits.parse().ok())
        .ok_or_else(|| AppError::BadRequest(COST_INVALID.into()))
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

/// The `email` and `password` strings of a JSON body, unvalidated.
fn credentials_body(body: &[u8]) -> Result<(String, String), AppError> {
    let fields = match serde_json::from_slice(body) {
        Ok(Body::Object(fields)) => fields,
        Ok(Body::Repeated(name)) => {
            return Err(AppError::BadRequest(format!(
                "Field '{name}' must appear only once"
            )));
        }
        Ok(Body::NotObject) => {
            return Err(AppError::BadRequest(
                "Request body must be a JSON object".into(),
            ));
        }
        Err(_) => {
            return Err(AppError::BadRequest(
                "Request body must be valid JSON".into(),
            ));
        }
    };
    let email = string_field(&fields, "email")?;
    let password = string_field(&fields, "password")?;
    Ok((email.to_owned(), password.to_owned()))
}

/// A JSON body as the handlers see it. serde_json alone keeps the last of
/// repeated keys, so `{"email":"a","email":"b"}` would mean one thing to us
/// and another to a proxy or firewall that read the first: we refuse it.
enum Body {
    /// An object whose keys are all distinct.
    Object(Map<String, Value>),
    /// An object naming this key twice.
    Repeated(String),
    /// Valid JSON, but not an object.
    NotObject,
}

impl<'de> Deserialize<'de> for Body {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Body, D::Error> {
        deserializer.deserialize_any(BodyVisitor)
    }
}

struct BodyVisitor;

impl<'de> Visitor<'de> for BodyVisitor {
    type Value = Body;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Body, A::Error> {
        let mut fields = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value: Value = map.next_value()?;
            if fields.contains_key(&key) {
                // Read the rest, so a syntax error later still says "not JSON".
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                return Ok(Body::Repeated(key));
            }
            fields.insert(key, value);
        }
        Ok(Body::Object(fields))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Body, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Body::NotObject)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Body, E> {
        Ok(Body::NotObject)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Body, E> {
        Ok(Body::NotObject)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Body, E> {
        Ok(Body::NotObject)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Body, E> {
        Ok(Body::NotObject)
    }

    fn visit_str<E>(self, _: &str) -> Result<Body, E> {
        Ok(Body::NotObject)
    }

    fn visit_unit<E>(self) -> Result<Body, E> {
        Ok(Body::NotObject)
    }
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
        let parsed = credentials_body(body.as_bytes()).and_then(|(email, password)| {
            Email::parse(&email).ok_or(AppError::InvalidEmail)?;
            Ok(Password::parse(password)?)
        });
        parsed.unwrap_err().detail()
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
        assert_eq!(detail("null"), "Request body must be a JSON object");
        assert_eq!(detail(r#""text""#), "Request body must be a JSON object");
        assert_eq!(
            detail(r#"{"email":"a@b.co","email":"c@d.co","password":"longenough"}"#),
            "Field 'email' must appear only once"
        );
        assert_eq!(
            detail(r#"{"email":"a@b.co","email":"c@d.co","password":"#),
            "Request body must be valid JSON"
        );
    }

    #[test]
    fn cost_is_one_canonical_u32_or_absent() {
        let cost = |values: &[&[u8]]| {
            let values: Vec<HeaderValue> = values
                .iter()
                .map(|v| HeaderValue::from_bytes(v).expect("a legal header value"))
                .collect();
            parse_cost(&values).map_err(|e| e.detail())
        };
        assert_eq!(cost(&[]), Ok(1));
        assert_eq!(cost(&[b"0"]), Ok(0));
        assert_eq!(cost(&[b"5"]), Ok(5));
        assert_eq!(cost(&[b"4294967295"]), Ok(u32::MAX));
        for bad in [
            &b""[..],
            b"00",
            b"01",
            b"+1",
            b"-1",
            b" 1",
            b"1 ",
            b"1.0",
            b"1e3",
            b"0x1",
            b"1,1",
            b"4294967296",
            b"99999999999999999999",
            "\u{661}".as_bytes(),
            b"\xff",
        ] {
            assert_eq!(cost(&[bad]), Err(COST_INVALID.to_owned()), "{bad:?}");
        }
        assert_eq!(cost(&[b"1", b"1"]), Err(COST_REPEATED.to_owned()));
        assert_eq!(cost(&[b"0", b"5"]), Err(COST_REPEATED.to_owned()));
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

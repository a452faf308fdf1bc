//! The documented strings of the API contract (`../shared/seed/`), in one
//! place: each `detail` both as the string and as the whole error body
//! `{"detail":"..."}` the server answers with, byte for byte. All of it is listed, used or not.
#![allow(dead_code)]

/// Declares `NAME` (the detail) and `NAME_BODY` (the JSON error body) from
/// one literal, so the two can never disagree.
macro_rules! details {
    ($($name:ident, $body:ident = $text:literal;)*) => {$(
        pub const $name: &str = $text;
        pub const $body: &str = concat!(r#"{"detail":""#, $text, r#""}"#);
    )*};
}

details! {
    MISSING_KEY, MISSING_KEY_BODY =
        "Missing X-API-Key header. Get your key at https://kaggleingest.com/dashboard";
    INVALID_KEY, INVALID_KEY_BODY = "Invalid API key";
    EMAIL_TAKEN, EMAIL_TAKEN_BODY = "Email already registered";
    PASSWORD_TOO_SHORT, PASSWORD_TOO_SHORT_BODY = "Password must be at least 8 characters";
    INVALID_EMAIL, INVALID_EMAIL_BODY = "Invalid email address";
    INSUFFICIENT_CREDITS, INSUFFICIENT_CREDITS_BODY = "Insufficient credits";
    BAD_CREDENTIALS, BAD_CREDENTIALS_BODY = "Invalid email or password";
    SIGNUP_FAILED, SIGNUP_FAILED_BODY = "Signup failed: internal error";
    BUSY, BUSY_BODY = "Server busy, retry shortly";
    SIGNUPS_CLOSED, SIGNUPS_CLOSED_BODY = "Signups are disabled on this server";
    NOT_FOUND, NOT_FOUND_BODY = "Not Found";
    METHOD_NOT_ALLOWED, METHOD_NOT_ALLOWED_BODY = "Method Not Allowed";
}

/// The `message` of a signup's 200.
pub const CREATED: &str = "Account created successfully";
/// The `message` of a rotation's 200.
pub const ROTATED: &str = "API key rotated";
/// The `instructions` of every 200 that shows a key.
pub const INSTRUCTIONS: &str = "Add 'X-API-Key: <your_key>' header to all API requests";

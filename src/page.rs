//! The signup page at `GET /` and its assets, embedded in the binary: no CDN,
//! no build step. The page talks to the JSON API with `fetch`; the only
//! thing rendered on the server (once, at startup) is what the page must say
//! before any request: whether signups are open, and to which domains.
//! `web_page = false` turns all of it off, leaving `/` the JSON 404.

use bytes::Bytes;
use sha2::{Digest, Sha256};
use warp::http::{HeaderValue, header};
use warp::reply::Response;

use crate::config::{Settings, SignupMode};

/// The page's paths, each also listed in `routes::PATHS`.
pub const INDEX_PATH: &str = "/";
/// The script.
pub const SCRIPT_PATH: &str = "/static/app.js";
/// The style sheet.
pub const STYLE_PATH: &str = "/static/style.css";
/// The icon.
pub const ICON_PATH: &str = "/static/icon.svg";

/// Scripts, styles, images and fetches from this origin only; no inline
/// script or style, no plugins, no framing, forms post only here.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'self'; \
     base-uri 'none'; frame-ancestors 'none'";

/// The page shows keys: no cache may keep it.
const PAGE_CACHE: &str = "no-store";
/// Assets hold no secret. Their URLs carry a version, so an upgrade is
/// picked up at once; an hour bounds a stale copy fetched without it.
const ASSET_CACHE: &str = "public, max-age=3600";

const INDEX: &str = include_str!("page/index.html");
const SIGNUP_OPEN: &str = include_str!("page/signup-open.html");
const SIGNUP_CLOSED: &str = include_str!("page/signup-closed.html");

/// An embedded static file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const ASSETS: [Asset; 3] = [
    Asset {
        path: SCRIPT_PATH,
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("page/app.js"),
    },
    Asset {
        path: STYLE_PATH,
        content_type: "text/css; charset=utf-8",
        body: include_str!("page/style.css"),
    },
    Asset {
        path: ICON_PATH,
        content_type: "image/svg+xml",
        body: include_str!("page/icon.svg"),
    },
];

/// The page as rendered for this server's settings.
#[derive(Debug)]
pub struct Page {
    html: Bytes,
}

impl Page {
    /// The page for these settings, or `None` when `web_page` is off.
    pub fn from_settings(settings: &Settings) -> Option<Page> {
        settings.web_page.then(|| {
            Page::render(
                settings.signups == SignupMode::Open,
                &settings.signup_email_domains,
            )
        })
    }

    /// Renders the HTML: the signup form or the closed notice, the allowed
    /// domains (shown in Unicode), and the asset version.
    pub fn render(signups_open: bool, email_domains: &[String]) -> Page {
        let signup = if signups_open {
            SIGNUP_OPEN.replace("{{email_hint}}", &email_hint(email_domains))
        } else {
            SIGNUP_CLOSED.to_owned()
        };
        let html = INDEX
            .replace("{{signup}}", signup.trim_end())
            .replace("{{version}}", &asset_version());
        Page { html: html.into() }
    }

    /// The response for `path` if it is the page or one of its assets.
    pub fn respond(&self, path: &str) -> Option<Response> {
        let (body, content_type, cache) = if path == INDEX_PATH {
            (self.html.clone(), "text/html; charset=utf-8", PAGE_CACHE)
        } else {
            let asset = ASSETS.iter().find(|a| a.path == path)?;
            (
                Bytes::from_static(asset.body.as_bytes()),
                asset.content_type,
                ASSET_CACHE,
            )
        };
        let mut response = Response::new(body.into());
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        Some(response)
    }
}

/// The line under the email field: which domains may sign up, if limited.
fn email_hint(domains: &[String]) -> String {
    let shown: Vec<String> = domains
        .iter()
        .map(|d| {
            let (unicode, errors) = idna::domain_to_unicode(d);
            escape_html(if errors.is_ok() { &unicode } else { d })
        })
        .collect();
    match shown.as_slice() {
        [] => "With your password, it gets you a new key if you lose this one.".to_owned(),
        [one] => format!("Only addresses at <strong>{one}</strong> can sign up here."),
        [rest @ .., last] => format!(
            "Only addresses at <strong>{}</strong> or <strong>{last}</strong> can sign up here.",
            rest.join("</strong>, <strong>")
        ),
    }
}

/// A short digest of every asset: changes whenever any of them does.
fn asset_version() -> String {
    let mut digest = Sha256::new();
    for asset in &ASSETS {
        digest.update(asset.body.as_bytes());
    }
    hex::encode(&digest.finalize()[..6])
}

/// Text safe inside HTML elements and attribute values.
fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn html(page: &Page) -> String {
        String::from_utf8(page.html.to_vec()).expect("the page is UTF-8")
    }

    #[test]
    fn every_placeholder_is_filled() {
        for page in [
            Page::render(true, &[]),
            Page::render(true, &["example.com".into()]),
            Page::render(false, &[]),
        ] {
            let html = html(&page);
            assert!(!html.contains("{{") && !html.contains("}}"), "{html}");
            assert!(html.contains(&format!("{SCRIPT_PATH}?v={}", asset_version())));
        }
    }

    #[test]
    fn closed_signups_leave_the_form_out_and_say_so() {
        let html = html(&Page::render(false, &[]));

        assert!(!html.contains("id=\"signup-form\""));
        assert!(html.contains("Signups are closed on this server"));
        assert!(html.contains("id=\"check-form\"") && html.contains("id=\"rotate-form\""));
    }

    #[test]
    fn allowed_domains_are_listed_in_unicode_and_escaped() {
        let one = email_hint(&["example.com".into()]);
        let three = email_hint(&["a.io".into(), "xn--bcher-kva.de".into(), "<b>.io".into()]);

        assert_eq!(
            one,
            "Only addresses at <strong>example.com</strong> can sign up here."
        );
        assert_eq!(
            three,
            "Only addresses at <strong>a.io</strong>, <strong>bücher.de</strong> or \
             <strong>&lt;b&gt;.io</strong> can sign up here."
        );
    }

    #[test]
    fn nothing_inline_that_the_policy_would_block() {
        let sources = [INDEX, SIGNUP_OPEN, SIGNUP_CLOSED];
        for source in sources {
            assert!(!source.contains(" style="), "inline style attribute");
            assert!(!source.contains("<style"), "inline style element");
            let handler = source.split(" on").skip(1).find(|rest| {
                let name = rest.split('=').next().unwrap_or_default();
                rest.contains('=')
                    && !name.is_empty()
                    && name.bytes().all(|b| b.is_ascii_lowercase())
            });
            assert!(handler.is_none(), "inline event handler: on{handler:?}");
            for script in source.split("<script").skip(1) {
                assert!(script.starts_with(" src="), "inline script: {script}");
            }
        }
    }

    #[test]
    fn every_asset_has_a_type_and_unknown_paths_none() {
        let page = Page::render(true, &[]);
        for asset in &ASSETS {
            let response = page.respond(asset.path).expect("served");
            assert_eq!(response.headers()[header::CONTENT_TYPE], asset.content_type);
        }
        assert!(page.respond("/static/").is_none());
        assert!(page.respond("/static/app.js.map").is_none());
    }
}

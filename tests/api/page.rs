//! The signup page over plain HTTP: what `/` and its assets answer, with
//! which headers, and what the page says for the server's settings. The
//! browser test (`browser.rs`) drives the same page in Chromium.

use crate::contract::{METHOD_NOT_ALLOWED, NOT_FOUND_BODY};
use crate::helpers::{Reply, TestServer, assert_head_like_get};

/// The page and its assets, with their content types.
const PAGE_PATHS: [(&str, &str); 4] = [
    ("/", "text/html; charset=utf-8"),
    ("/static/app.js", "text/javascript; charset=utf-8"),
    ("/static/style.css", "text/css; charset=utf-8"),
    ("/static/icon.svg", "image/svg+xml"),
];
const CSP_DIRECTIVES: [&str; 8] = [
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "connect-src 'self'",
    "img-src 'self'",
    "form-action 'self'",
    "base-uri 'none'",
    "frame-ancestors 'none'",
];

/// The value of `attribute` in each `<tag ...>` of `html`, in order (our
/// own markup: double-quoted attributes, one tag per match).
fn attributes<'a>(html: &'a str, tag: &str, attribute: &str) -> Vec<Option<&'a str>> {
    html.split(&format!("<{tag} "))
        .skip(1)
        .map(|rest| {
            let tag = &rest[..rest.find('>').expect("tags are closed")];
            tag.split(&format!(" {attribute}=\""))
                .nth(1)
                .or_else(|| tag.strip_prefix(&format!("{attribute}=\"")))
                .map(|v| &v[..v.find('"').expect("quoted")])
        })
        .collect()
}

/// The `<input ...>` tag holding `name="..."` and `more`, if any.
fn input_with<'a>(html: &'a str, name: &str, more: &str) -> Option<&'a str> {
    html.split("<input ")
        .skip(1)
        .map(|rest| &rest[..rest.find('>').expect("tags are closed")])
        .find(|tag| tag.contains(&format!("name=\"{name}\"")) && tag.contains(more))
}

#[test]
fn the_page_is_served_at_the_root_with_a_strict_policy_and_no_cache() {
    let server = TestServer::start();

    let page = server.get("/", None);

    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(page.header("cache-control"), Some("no-store"));
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    let csp = page.header("content-security-policy").expect("a CSP");
    let directives: Vec<&str> = csp.split(';').map(str::trim).collect();
    for directive in CSP_DIRECTIVES {
        assert!(
            directives.contains(&directive),
            "{directive} missing: {csp}"
        );
    }
    assert!(!csp.contains("unsafe"), "{csp}");
}

#[test]
fn the_forms_have_the_documented_inputs_each_with_a_label() {
    let server = TestServer::start();

    let html = server.get("/", None).body;

    assert!(input_with(&html, "email", r#"autocomplete="email""#).is_some());
    assert!(input_with(&html, "password", r#"autocomplete="new-password""#).is_some());
    assert!(input_with(&html, "password", r#"autocomplete="current-password""#).is_some());
    assert!(input_with(&html, "api_key", r#"autocomplete="off""#).is_some());
    assert!(html.contains("At least 8 characters"));
    assert!(html.contains("it will not be shown again"));
    assert!(
        html.contains(r#"<meta name="viewport" content="width=device-width, initial-scale=1">"#)
    );
    assert!(html.contains(r#"aria-live="polite""#));
    let labelled: Vec<_> = attributes(&html, "label", "for");
    for id in attributes(&html, "input", "id") {
        assert!(labelled.contains(&id), "input {id:?} has no label");
    }
    for method in attributes(&html, "form", "method") {
        assert_eq!(
            method,
            Some("post"),
            "a form that fails over to GET would put secrets in a URL"
        );
    }
    for src in attributes(&html, "script", "src") {
        assert!(src.is_some_and(|s| s.starts_with("/static/")), "{src:?}");
    }
}

#[test]
fn the_assets_have_their_types_and_may_be_cached() {
    let server = TestServer::start();
    let html = server.get("/", None).body;

    for (path, content_type) in &PAGE_PATHS[1..] {
        let versioned = html
            .split(&format!("\"{path}?v="))
            .nth(1)
            .map(|rest| format!("{path}?v={}", &rest[..rest.find('"').unwrap()]))
            .unwrap_or_else(|| panic!("the page does not load {path}"));

        let asset = server.get(&versioned, None);

        assert_eq!(asset.status, 200, "{versioned}");
        assert_eq!(asset.header("content-type"), Some(*content_type), "{path}");
        assert_eq!(asset.header("cache-control"), Some("public, max-age=3600"));
        assert_eq!(asset.header("x-content-type-options"), Some("nosniff"));
        assert!(!asset.body.is_empty());
        assert_eq!(
            server.get(path, None).body,
            asset.body,
            "the version only busts caches"
        );
    }
}

#[test]
fn head_answers_the_page_and_its_assets_like_get_without_a_body() {
    let server = TestServer::start();

    for (path, _) in PAGE_PATHS {
        let get = server.request("GET", path, &[], "");
        let head = server.request("HEAD", path, &[], "");

        assert_head_like_get(path, &get, &head);
        for name in ["cache-control", "content-security-policy"] {
            assert_eq!(head.header(name), get.header(name), "{name} of {path}");
        }
    }
}

#[test]
fn other_spellings_of_the_page_paths_are_json_404s_and_other_methods_405() {
    let server = TestServer::start();

    for path in [
        "//",
        "/index.html",
        "/.",
        "/%2F",
        "/static",
        "/static/",
        "/static/app.js/",
        "/static//app.js",
        "/static/APP.JS",
        "/static/app.js.map",
        "/favicon.ico",
    ] {
        let reply = server.request("GET", path, &[], "");
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (404, NOT_FOUND_BODY),
            "{path}"
        );
    }
    for method in ["POST", "PUT", "DELETE"] {
        let reply = server.request(method, "/", &[], "");
        assert_eq!(
            (reply.status, reply.detail()),
            (405, METHOD_NOT_ALLOWED.to_owned()),
            "{method} /"
        );
    }
}

#[test]
fn with_the_page_off_the_root_and_the_assets_are_json_404s() {
    let server = TestServer::start_with(&["--web-page", "false"]);

    let replies: Vec<(&str, Reply)> = PAGE_PATHS
        .iter()
        .flat_map(|(path, _)| [("GET", *path), ("HEAD", *path)])
        .map(|(method, path)| (path, server.request(method, path, &[], "")))
        .collect();
    let post = server.request("POST", "/", &[], "");

    for (path, reply) in &replies {
        assert_eq!(reply.status, 404, "{path}");
        assert_eq!(reply.header("content-type"), Some("application/json"));
    }
    assert_eq!(server.get("/", None).body, NOT_FOUND_BODY);
    assert_eq!((post.status, post.body.as_str()), (404, NOT_FOUND_BODY));
    assert_eq!(
        server.get("/healthz", None).status,
        200,
        "the API is still served"
    );
}

#[test]
fn with_signups_closed_the_page_says_so_and_has_no_signup_form() {
    let server = TestServer::start_with(&["--signups", "closed"]);

    let html = server.get("/", None).body;

    assert!(html.contains("Signups are closed on this server"), "{html}");
    assert!(input_with(&html, "password", "new-password").is_none());
    assert!(
        input_with(&html, "api_key", "").is_some(),
        "keys can still be checked"
    );
    assert!(input_with(&html, "password", "current-password").is_some());
}

#[test]
fn with_signup_email_domains_the_page_names_them() {
    let server = TestServer::start_with(&["--signup-email-domains", "example.com,Bücher.de"]);

    let html = server.get("/", None).body;

    assert!(
        html.contains(
            "Only addresses at <strong>example.com</strong> or <strong>bücher.de</strong> \
             can sign up here."
        ),
        "{html}"
    );
}

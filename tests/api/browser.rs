//! The signup page in a real browser: Debian's headless Chromium driven by
//! chromedriver (WebDriver) against the real binary, all on loopback. Signs
//! up, reads the key off the page and checks it over plain HTTP, sees the
//! API's errors next to the form, checks a key, rotates it, uses the
//! keyboard alone, and saves screenshots at phone and desktop widths under
//! `target/screenshots/`; with signups closed, the page says so and still
//! checks keys. Without chromium or chromedriver it skips with one
//! line (and fails under `KAGGLEINGEST_TEST_REQUIRE_PROGRAMS`).

use std::io::{BufRead, BufReader};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::channel;
use std::time::Duration;

use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::FutureExt;
use serde_json::{Value, json};

use crate::contract::{EMAIL_TAKEN, INVALID_EMAIL, INVALID_KEY, PASSWORD_TOO_SHORT};
use crate::helpers::{TestServer, free_port_addr, program_answers};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Longest wait for anything the page does (it talks to loopback only).
const PATIENCE: Duration = Duration::from_secs(30);
const PASSWORD: &str = "correct horse battery";
/// WebDriver's code points for keys (WebDriver spec, "keyboard actions").
const TAB: char = '\u{E004}';
const ENTER: &str = "\u{E007}";
const PHONE: (u32, u32) = (390, 844);
const DESKTOP: (u32, u32) = (1280, 900);

/// A chromedriver on a loopback port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    /// Starts chromedriver and waits for its "started successfully" line.
    fn start() -> Driver {
        let dir = tempfile::tempdir().expect("creating a temp dir");
        let port = free_port_addr().port();
        let mut child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg(format!(
                "--log-path={}",
                dir.path().join("chromedriver.log").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (ready_tx, ready_rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.contains("started successfully") {
                    let _ = ready_tx.send(());
                }
            }
        });
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        ready_rx
            .recv_timeout(PATIENCE)
            .expect("chromedriver did not start");
        driver
    }

    /// A new headless Chromium session with a fresh profile. The flags keep
    /// it off the network: loopback is all there is.
    async fn session(&self, profile: &std::path::Path) -> Client {
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-default-apps",
            "--disable-dev-shm-usage",
            "--password-store=basic",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            "--lang=en-US",
            &format!("--window-size={},{}", DESKTOP.0, DESKTOP.1),
            &format!("--user-data-dir={}", profile.display()),
        ];
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object literal")
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("chromedriver starts a Chromium session")
    }
}

/// Where screenshots go: `target/screenshots/`, kept by CI.
fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"),
        PathBuf::from,
    );
    let dir = target.join("screenshots");
    std::fs::create_dir_all(&dir).expect("creating target/screenshots");
    dir
}

/// A page driven through WebDriver, with the waits the test needs.
struct Browser {
    client: Client,
}

impl Browser {
    async fn find(&self, css: &str) -> Element {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
    }

    /// Waits until an element matches `css` and returns it.
    async fn wait_for(&self, css: &str) -> Element {
        self.client
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("waiting for {css}: {e}"))
    }

    /// Waits until `region` (a message area) shows exactly `detail` as its
    /// detail line.
    async fn wait_for_detail(&self, region: &str, detail: &str) -> Element {
        let xpath = format!("//*[@id='{region}']/p[@class='detail' and text()='{detail}']");
        self.client
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::XPath(&xpath))
            .await
            .unwrap_or_else(|e| panic!("waiting for {detail:?} in #{region}: {e}"))
    }

    /// Clears the input `css` and types `text` into it.
    async fn fill(&self, css: &str, text: &str) {
        let input = self.find(css).await;
        input.clear().await.expect("clearing an input");
        input.send_keys(text).await.expect("typing");
    }

    /// Fills the email and password of form `name` (`signup`, `rotate`)
    /// and submits it with its button.
    async fn submit_credentials(&self, name: &str, email: &str, password: &str) {
        self.fill(&format!("#{name}-email"), email).await;
        self.fill(&format!("#{name}-password"), password).await;
        self.click(&format!("#{name}-form button[type=submit]"))
            .await;
    }

    async fn click(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
    }

    async fn attr(&self, css: &str, name: &str) -> Option<String> {
        self.find(css)
            .await
            .attr(name)
            .await
            .unwrap_or_else(|e| panic!("reading {name} of {css}: {e}"))
    }

    async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.expect("reading text")
    }

    async fn eval(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("{script}: {e}"))
    }

    /// Presses and releases `key` wherever the focus is.
    async fn press(&self, key: char) {
        let keys = KeyActions::new("keyboard".to_owned())
            .then(KeyAction::Down { value: key })
            .then(KeyAction::Up { value: key });
        self.client
            .perform_actions(keys)
            .await
            .expect("pressing a key");
    }

    /// The `id` of the focused element.
    async fn focused(&self) -> String {
        let id = self
            .eval("return document.activeElement && document.activeElement.id")
            .await;
        id.as_str().unwrap_or_default().to_owned()
    }

    /// Resizes the window so that the page gets `width` x `height`.
    async fn resize(&self, (width, height): (u32, u32)) {
        let (w, h) = self.window_with_viewport(width, height).await;
        // The window is bigger than its viewport by whatever frame it has.
        self.window_with_viewport(2 * width - w, 2 * height - h)
            .await;
    }

    /// Sets the window's size; returns the viewport's.
    async fn window_with_viewport(&self, width: u32, height: u32) -> (u32, u32) {
        self.client
            .set_window_size(width, height)
            .await
            .expect("resizing the window");
        let inner = self
            .eval("return [window.innerWidth, window.innerHeight]")
            .await;
        let size = |i: usize| inner[i].as_u64().expect("a number") as u32;
        (size(0), size(1))
    }

    /// Resizes to `size` and saves a screenshot of the viewport as `name`.
    async fn screenshot(&self, name: &str, size: (u32, u32)) {
        self.resize(size).await;
        let overflow = self
            .eval("return document.documentElement.scrollWidth > window.innerWidth")
            .await;
        assert_eq!(overflow, json!(false), "{name}: the page scrolls sideways");
        let png = self.client.screenshot().await.expect("a screenshot");
        std::fs::write(screenshot_dir().join(format!("{name}.png")), png)
            .expect("saving a screenshot");
    }

    /// Nothing about a key may be kept outside the page's text.
    async fn assert_key_kept_in_the_page_only(&self, key: &str) {
        let kept = self
            .eval(
                "return [document.title, location.href, document.cookie, \
                 JSON.stringify(localStorage), JSON.stringify(sessionStorage), \
                 performance.getEntries().map(e => e.name).join(' ')].join('\\n')",
            )
            .await;
        let kept = kept.as_str().expect("a string");
        assert!(!kept.contains(key), "the key leaked: {kept}");
    }
}

/// Runs `walk` in a fresh Chromium session on `server`'s page; skips (one
/// line) without Chromium. The session is ended even when `walk` panics:
/// killing chromedriver alone would leave Chromium running.
async fn in_chromium(server: &TestServer, walk: impl AsyncFnOnce(&Browser)) {
    if !program_answers(CHROMIUM, "--version", "chromium")
        || !program_answers(CHROMEDRIVER, "--version", "chromium-driver")
    {
        return;
    }
    let driver = Driver::start();
    let profile = tempfile::tempdir().expect("creating a profile dir");
    let browser = Browser {
        client: driver.session(profile.path()).await,
    };
    browser
        .client
        .goto(&server.url("/"))
        .await
        .expect("opening the page");

    let outcome = AssertUnwindSafe(walk(&browser)).catch_unwind().await;

    let closed = browser.client.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    closed.expect("ending the session");
}

#[tokio::test(flavor = "current_thread")]
async fn a_person_signs_up_checks_and_rotates_a_key_in_chromium() {
    let server = TestServer::start();

    in_chromium(&server, async |browser| {
        sign_up_check_and_rotate(browser, &server).await
    })
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn with_signups_closed_the_page_says_so_and_still_checks_keys_in_chromium() {
    let server = TestServer::start_with(&["--signups", "closed"]);

    in_chromium(&server, async |browser| {
        let notice = browser.wait_for("#signups-closed").await;
        assert!(
            notice
                .text()
                .await
                .expect("reading the notice")
                .contains("Signups are closed on this server")
        );
        assert!(
            browser
                .client
                .find(Locator::Css("#signup-form"))
                .await
                .is_err(),
            "no signup form"
        );
        browser.fill("#check-key", "ki_notakey").await;
        browser.click("#check-form button[type=submit]").await;
        browser.wait_for_detail("check-message", INVALID_KEY).await;
        browser.screenshot("phone-signups-closed", PHONE).await;
    })
    .await;
}

/// The walk through the page, in one browser session.
async fn sign_up_check_and_rotate(browser: &Browser, server: &TestServer) {
    let email = "browser@example.com";
    assert_eq!(
        browser.client.title().await.expect("a title"),
        "KaggleIngest accounts"
    );

    // The keyboard alone reaches the signup form, in order, with a visible
    // focus ring; Enter submits.
    let mut order = Vec::new();
    for _ in 0..4 {
        browser.press(TAB).await;
        order.push(browser.focused().await);
    }
    assert_eq!(
        order[1..],
        ["", "signup-email", "signup-password"][..],
        "{order:?}"
    );
    let ring = browser
        .eval("return getComputedStyle(document.activeElement).outlineStyle")
        .await;
    assert_ne!(ring, json!("none"), "focus is visible");
    browser.fill("#signup-email", email).await;
    browser
        .fill("#signup-password", &format!("short{ENTER}"))
        .await;
    browser
        .wait_for_detail("signup-message", PASSWORD_TOO_SHORT)
        .await;
    assert_eq!(browser.focused().await, "signup-password");
    assert_eq!(
        browser
            .attr("#signup-password", "aria-invalid")
            .await
            .as_deref(),
        Some("true")
    );

    // Sign up: the key appears once on the page, and it works.
    browser.submit_credentials("signup", email, PASSWORD).await;
    let shown = browser
        .wait_for("#signup-key:not([hidden]) #signup-key-value")
        .await;
    let key = shown.text().await.expect("reading the key");
    let me = server.get("/api/auth/me", Some(&key));
    assert_eq!(me.status, 200, "the page's key authenticates: {}", me.body);
    assert_eq!(me.json()["email"], email);
    assert!(
        browser
            .text("#signup-key")
            .await
            .contains("it will not be shown again")
    );
    browser.assert_key_kept_in_the_page_only(&key).await;
    browser.click("#signup-key .copy").await;
    let copied = browser
        .wait_for("#signup-key .copy-status:not(:empty)")
        .await;
    let copied = copied.text().await.expect("reading the copy status");
    assert!(
        copied.contains("Copied") || copied.contains("selected"),
        "{copied}"
    );
    browser.screenshot("phone-signed-up", PHONE).await;
    browser.resize(DESKTOP).await;
    browser.eval("window.scrollTo(0, 0); return true").await;
    browser.screenshot("desktop-signed-up", DESKTOP).await;

    // The API's errors, verbatim, next to the form.
    browser.submit_credentials("signup", email, PASSWORD).await;
    browser.wait_for_detail("signup-message", EMAIL_TAKEN).await;
    browser
        .submit_credentials("signup", "not-an-email", PASSWORD)
        .await;
    browser
        .wait_for_detail("signup-message", INVALID_EMAIL)
        .await;
    browser.screenshot("desktop-error", DESKTOP).await;

    // Check the key: the account behind it.
    browser.fill("#check-key", &key).await;
    browser.click("#check-form button[type=submit]").await;
    browser.wait_for("#check-result:not([hidden])").await;
    assert_eq!(browser.text("#check-email").await, email);
    assert_eq!(browser.text("#check-tier").await, "free");
    assert_eq!(browser.text("#check-credits").await, "10");
    assert_eq!(
        browser.attr("#check-created", "datetime").await.as_deref(),
        me.json()["created_at"].as_str()
    );
    assert!(!browser.text("#check-created").await.is_empty());

    // Rotate: a new key once, the old one refused from then on.
    browser.submit_credentials("rotate", email, PASSWORD).await;
    let rotated = browser
        .wait_for("#rotate-key:not([hidden]) #rotate-key-value")
        .await;
    let new_key = rotated.text().await.expect("reading the new key");
    assert_ne!(new_key, key);
    assert_eq!(server.get("/api/auth/me", Some(&key)).status, 403);
    assert_eq!(server.get("/api/auth/me", Some(&new_key)).status, 200);
    browser.assert_key_kept_in_the_page_only(&new_key).await;
    browser.click("#check-form button[type=submit]").await;
    browser.wait_for_detail("check-message", INVALID_KEY).await;
    browser.screenshot("desktop-rotated", DESKTOP).await;
    browser.screenshot("phone-rotated", PHONE).await;

    // A fresh page at phone width, as a person first sees it.
    browser.client.refresh().await.expect("reloading");
    browser.wait_for("#signup-form").await;
    browser.screenshot("phone", PHONE).await;
    browser.screenshot("desktop", DESKTOP).await;
}

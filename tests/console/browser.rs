//! A headless Chromium driven through chromedriver (WebDriver), one per test: chromedriver
//! runs on a free port in its own process group with a fresh profile, and the whole group
//! is killed when the test ends, whatever happened. At most two browsers run at once.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::helpers::{PATIENCE, TestApp, unused_port, wait_until};

static SLOTS: Semaphore = Semaphore::const_new(2);

/// A browser session on the console of one test server.
pub struct Browser {
    pub client: Client,
    driver: Child,
    driver_url: String,
    base: String,
    _profile: TempDir,
    _slot: SemaphorePermit<'static>,
}

const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--disable-breakpad",
    "--disable-crash-reporter",
];

fn driver(port: u16) -> Child {
    Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start chromedriver ({e}): ./scripts/test.sh installs Debian's chromium \
                 and chromium-driver, or run `apt-get install chromium chromium-driver`"
            )
        })
}

impl Browser {
    /// Opens the console of `app` at `/` in a new browser.
    pub async fn open(app: &TestApp) -> Self {
        let slot = SLOTS.acquire().await.expect("browser slots");
        let port = unused_port();
        let driver = driver(port);
        let driver_url = format!("http://127.0.0.1:{port}");
        let status = format!("{driver_url}/status");
        wait_until("chromedriver to answer", || async {
            let answer = reqwest::get(&status).await.ok()?;
            let body: Value = answer.json().await.ok()?;
            body["value"]["ready"].as_bool().filter(|r| *r)
        })
        .await;
        let profile = tempfile::tempdir().expect("profile dir");
        let mut args: Vec<String> = FLAGS.iter().map(|f| (*f).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let mut options = json!({"args": args});
        if std::path::Path::new("/usr/bin/chromium").exists() {
            options["binary"] = json!("/usr/bin/chromium");
        }
        let capabilities = json!({
            "goog:chromeOptions": options,
            "goog:loggingPrefs": {"browser": "ALL"},
        });
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities.as_object().expect("object").clone())
            .connect(&driver_url)
            .await
            .expect("a chromium session");
        let browser = Self {
            client,
            driver,
            driver_url,
            base: app.address.clone(),
            _profile: profile,
            _slot: slot,
        };
        browser.viewport(1280, 800).await;
        browser.go("#/workflows").await;
        browser
    }

    /// Resizes the window so that the page itself gets `width` × `height` pixels.
    pub async fn viewport(&self, width: u32, height: u32) {
        self.client
            .set_window_size(width, height)
            .await
            .expect("resize");
        let inner = self
            .client
            .execute("return [window.innerWidth, window.innerHeight]", vec![])
            .await
            .expect("script");
        let extra = |i: usize, want: u32| {
            want + want.saturating_sub(inner[i].as_u64().unwrap_or(want as u64) as u32)
        };
        self.client
            .set_window_size(extra(0, width), extra(1, height))
            .await
            .expect("resize");
    }

    /// Navigates to `/` + `hash` (e.g. `#/runs`).
    pub async fn go(&self, hash: &str) {
        self.client
            .goto(&format!("{}/{hash}", self.base))
            .await
            .expect("navigation");
    }

    /// The first element matching `css`, waiting for it to appear.
    pub async fn find(&self, css: &str) -> Element {
        self.client
            .wait()
            .at_most(PATIENCE)
            .every(Duration::from_millis(50))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"))
    }

    /// How many elements match `css` now.
    pub async fn count(&self, css: &str) -> usize {
        self.client
            .find_all(Locator::Css(css))
            .await
            .expect("find_all")
            .len()
    }

    /// Waits until exactly `n` elements match `css`.
    pub async fn wait_count(&self, css: &str, n: usize) {
        wait_until(&format!("{n} elements {css}"), || async {
            let found = self.client.find_all(Locator::Css(css)).await.ok()?;
            (found.len() == n).then_some(())
        })
        .await
    }

    /// Waits until the text of the first element matching `css` contains `text`.
    pub async fn wait_text(&self, css: &str, text: &str) -> String {
        wait_until(&format!("{css} to show {text:?}"), || async {
            let el = self.client.find(Locator::Css(css)).await.ok()?;
            let shown = el.text().await.ok()?;
            shown.contains(text).then_some(shown)
        })
        .await
    }

    /// Waits until `attr` of the first element matching `css` equals `value`.
    pub async fn wait_attr(&self, css: &str, attr: &str, value: &str) {
        wait_until(&format!("{css} to have {attr}={value:?}"), || async {
            let el = self.client.find(Locator::Css(css)).await.ok()?;
            (el.attr(attr).await.ok()?.as_deref() == Some(value)).then_some(())
        })
        .await
    }

    /// Clicks the first element matching `css`, finding it again when a live update
    /// replaced it in between.
    pub async fn click(&self, css: &str) {
        wait_until(&format!("a click on {css}"), || async {
            let el = self.client.find(Locator::Css(css)).await.ok()?;
            el.click().await.ok()
        })
        .await
    }

    /// Replaces the value of the field matching `css` with `text`, as typed.
    pub async fn type_into(&self, css: &str, text: &str) {
        wait_until(&format!("typing into {css}"), || async {
            let field = self.client.find(Locator::Css(css)).await.ok()?;
            field.clear().await.ok()?;
            field.send_keys(text).await.ok()
        })
        .await
    }

    /// Signs in with `token` on the login form.
    pub async fn sign_in(&self, token: &str) {
        self.type_into("#token", token).await;
        self.click("form.login button[type=submit]").await;
    }

    /// Saves a PNG of the window as `target/console-screenshots/<name>.png`.
    pub async fn screenshot(&self, name: &str) {
        self.client
            .execute("window.scrollTo(0, 0)", vec![])
            .await
            .expect("scroll");
        let png = self.client.screenshot().await.expect("screenshot");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("screenshot written");
    }

    /// JavaScript errors the page recorded (`window.__errors`: uncaught errors, unhandled
    /// rejections, CSP violations) and the browser's own severe console messages, except
    /// the network lines of API answers (4xx that the console shows as problems).
    pub async fn errors(&self) -> Vec<String> {
        let mut errors: Vec<String> = self
            .client
            .execute("return window.__errors || []", vec![])
            .await
            .expect("script")
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|e| e.to_string())
            .collect();
        let session = self
            .client
            .session_id()
            .await
            .expect("id")
            .expect("session");
        let log: Value = reqwest::Client::new()
            .post(format!("{}/session/{session}/se/log", self.driver_url))
            .json(&json!({"type": "browser"}))
            .send()
            .await
            .expect("browser log")
            .json()
            .await
            .expect("json");
        for entry in log["value"].as_array().into_iter().flatten() {
            let message = entry["message"].as_str().unwrap_or_default();
            let api_answer = message.contains("/v1/")
                && message.contains("Failed to load resource: the server responded");
            if entry["level"] == "SEVERE" && !api_answer {
                errors.push(message.to_owned());
            }
        }
        errors
    }

    /// Asserts no error was recorded, then ends the session.
    pub async fn finish(self) {
        let errors = self.errors().await;
        assert!(errors.is_empty(), "browser errors: {errors:#?}");
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver and the chromium it started share the group led by chromedriver.
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{}", self.driver.id())])
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// `target/console-screenshots`, under `CARGO_TARGET_DIR` when set.
pub fn screenshot_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("console-screenshots")
}

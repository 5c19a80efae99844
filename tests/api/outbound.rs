//! The outbound policy (`policy.http`): denied calls fail their step at once, are never
//! retried, and never reach the target (a local server counting TCP connections sees
//! none); redirects are checked too, metadata addresses are denied without any
//! configuration, and the allow list admits only its hosts.

use serde_json::{Value, json};

use crate::helpers::{Target, TestApp, spawn_app, spawn_app_with};

/// Runs a one-step workflow calling `url` (retries allowed, so a retry would show) and
/// returns the finished run.
async fn call(app: &TestApp, url: &str) -> Value {
    let wf = app
        .create_workflow(&json!({"name": "out", "steps": [
            {"name": "call", "action": "http", "retry": {"max": 3, "backoff_ms": 10},
             "input": {"method": "GET", "url": url}}
        ]}))
        .await;
    let run = app.start_run(&wf, json!({})).await;
    app.wait_until_finished(&run).await
}

/// Asserts the run failed on its first and only attempt, with an error holding `parts`.
fn assert_denied(run: &Value, parts: &[&str]) {
    assert_eq!(run["status"], "FAILED", "{run}");
    let step = &run["steps"][0];
    let error = step["error"].as_str().unwrap();
    assert!(error.contains("outbound policy denies"), "{error}");
    for part in parts {
        assert!(error.contains(part), "{part:?} missing from {error}");
    }
    assert_eq!(
        step["attempts"].as_array().unwrap().len(),
        1,
        "a denial is not retried: {step}"
    );
}

#[tokio::test]
async fn private_addresses_are_denied_before_any_connection_when_asked() {
    let target = Target::start().await;
    let app = spawn_app_with(|c| c.policy.http.deny_private_networks = true).await;

    let literal = call(&app, &target.url("/x")).await;
    assert_denied(
        &literal,
        &["127.0.0.1", "loopback", "deny_private_networks"],
    );

    let named = call(&app, &format!("http://localhost:{}/x", target.port())).await;
    assert_denied(
        &named,
        &["localhost", "resolves to", "deny_private_networks"],
    );

    assert_eq!(target.accepted(), 0, "the target saw no connection");
}

#[tokio::test]
async fn the_same_calls_go_through_by_default() {
    let target = Target::start().await;
    let app = spawn_app().await;
    let run = call(&app, &format!("http://localhost:{}/x", target.port())).await;
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    assert_eq!(target.accepted(), 1);
}

#[tokio::test]
async fn deny_hosts_refuse_by_name_and_allow_hosts_admit_only_their_entries() {
    let target = Target::start().await;
    let app = spawn_app_with(|c| {
        c.policy.http.allow_hosts = vec!["127.0.0.1".into(), "*.example.com".into()];
        c.policy.http.deny_hosts = vec!["localhost".into()];
        c.policy.http.deny_private_networks = true;
    })
    .await;

    let allowed = call(&app, &target.url("/x")).await;
    assert_eq!(
        allowed["status"], "SUCCEEDED",
        "an allow entry naming the address admits it, private or not: {allowed}"
    );
    let accepted = target.accepted();
    assert_eq!(accepted, 1);

    let denied = call(&app, &format!("http://localhost:{}/x", target.port())).await;
    assert_denied(&denied, &["localhost", "deny_hosts entry \"localhost\""]);

    let elsewhere = call(&app, "http://127.0.0.2:9/x").await;
    assert_denied(&elsewhere, &["127.0.0.2", "allow_hosts"]);
    assert_eq!(
        target.accepted(),
        accepted,
        "no connection for denied calls"
    );
}

#[tokio::test]
async fn a_redirect_to_a_denied_host_is_not_followed() {
    let first = Target::start().await;
    let denied = Target::start().await;
    first.redirect_to(&format!("http://localhost:{}/secret", denied.port()));
    let app = spawn_app_with(|c| c.policy.http.deny_hosts = vec!["localhost".into()]).await;

    let run = call(&app, &first.url("/redirect")).await;
    assert_denied(&run, &["redirect to http://localhost:", "deny_hosts"]);
    assert_eq!(first.accepted(), 1, "the first hop was made");
    assert_eq!(denied.accepted(), 0, "the denied hop was not");
}

#[tokio::test]
async fn a_redirect_to_a_metadata_address_is_not_followed() {
    let first = Target::start().await;
    first.redirect_to("http://169.254.169.254/latest/meta-data/");
    let app = spawn_app().await;
    let run = call(&app, &first.url("/redirect")).await;
    assert_denied(&run, &["169.254.169.254", "link-local"]);
}

#[tokio::test]
async fn metadata_and_link_local_addresses_are_denied_without_configuration() {
    let app = spawn_app().await;
    for (url, host) in [
        (
            "http://169.254.169.254/latest/meta-data/",
            "169.254.169.254",
        ),
        ("http://[fd00:ec2::254]/latest/meta-data/", "fd00:ec2::254"),
        ("http://[::ffff:169.254.169.254]/", "169.254.169.254"),
        ("http://[fe80::1]:8080/", "fe80::1"),
    ] {
        let run = call(&app, url).await;
        assert_denied(
            &run,
            &[host, "always denied unless policy.http.allow_hosts"],
        );
    }
}

#[tokio::test]
async fn service_actions_are_checked_too_and_their_configured_hosts_stay_reachable() {
    let web = Target::start().await;
    let base = web.url("");
    let app = spawn_app_with(|c| {
        c.web.base_url = base;
        c.policy.http.deny_private_networks = true;
    })
    .await;
    let wf = app
        .create_workflow(&json!({"name": "svc", "steps": [
            {"name": "configured", "action": "web.search", "input": {"query": "q"}},
            {"name": "elsewhere", "action": "web.search",
             "input": {"query": "q", "endpoint": format!("http://localhost:{}/v1/search", web.port())}}
        ]}))
        .await;
    let run = app.start_run(&wf, json!({})).await;
    let run = app.wait_until_finished(&run).await;
    assert_eq!(run["steps"][0]["status"], "SUCCEEDED", "{run}");
    assert_eq!(run["steps"][1]["status"], "FAILED", "{run}");
    let error = run["steps"][1]["error"].as_str().unwrap();
    assert!(
        error.contains("localhost") && error.contains("deny_private_networks"),
        "{error}"
    );
    assert_eq!(web.accepted(), 1, "only the configured call connected");
}

#[tokio::test]
async fn a_bad_pattern_stops_start_up_naming_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let mut raw = crate::helpers::test_config(dir.path());
    raw.policy.http.deny_hosts = vec!["api.example.com".into(), "*bad".into()];
    let err =
        orchestrator::config::Config::from_raw(std::path::Path::new("c.yaml"), raw).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("c.yaml: policy.http.deny_hosts[1]"),
        "{err}"
    );
}

#[tokio::test]
async fn hook_delivery_goes_to_its_configured_target_whatever_the_policy() {
    let audit = Target::start().await;
    let base = audit.url("");
    let app = spawn_app_with(|c| {
        c.audit_log.base_url = base;
        c.policy.http.deny_hosts = vec!["127.0.0.0/8".into()];
    })
    .await;
    let run = call(&app, &audit.url("/from-a-step")).await;
    assert_denied(&run, &["127.0.0.1", "deny_hosts entry \"127.0.0.0/8\""]);
    crate::helpers::wait_until("the run's events to reach the audit log", || async {
        let events = audit
            .requests()
            .iter()
            .filter(|r| r.path == "/v1/events")
            .count();
        (events >= 4).then_some(())
    })
    .await;
    assert!(
        audit.requests().iter().all(|r| r.path == "/v1/events"),
        "only hooks reached it, never the denied step"
    );
}

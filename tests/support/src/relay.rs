//! One `shardcast` process run for a test ([`Relay`]): its config in a temp file, its log
//! captured to another, started on free ports (media and admin) and stopped (SIGTERM, or
//! killed when dropped). Tests see what it did through its admin API: the JSON API
//! ([`Relay::api`], [`Relay::clients`], [`Relay::client_by_addr`], [`Relay::shard_of`],
//! [`Relay::stream`], [`Relay::wait_stream`]) and `/metrics` ([`Relay::metric`]). The log
//! is kept for a failed test's report, and for the little no API reports (why a
//! connection was closed, [`Relay::wait_log`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::admin;
use crate::tools::{free_ports, temp_path};

/// The log filter every test relay runs with: info, plus the connection driver's and the
/// relay's debug lines (which shard accepted which peer, a viewer skipping video), so a
/// failed test's report tells the whole story.
pub const TEST_LOG_FILTER: &str = "info,shardcast::net=debug,shardcast::relay=debug";

/// One `shardcast` process started for a test, with its config in a temp file and its
/// stderr (plain-text log lines) captured to another. Dropping it kills the process, so a
/// failed test leaves no process behind; it removes the two files unless the test failed
/// (then the log is printed, and both stay for a closer look).
pub struct Relay {
    child: Option<Child>,
    pub port: u16,
    /// The admin listener (JSON API, /metrics, health checks).
    pub admin: SocketAddr,
    /// The media HTTP listener (HTTP-FLV, WebSocket-FLV).
    pub http: SocketAddr,
    /// The RTMPS listener, when started with [`Relay::start_tls`].
    pub tls: Option<SocketAddr>,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
}

impl Relay {
    /// Starts the relay binary `bin` (`env!("CARGO_BIN_EXE_shardcast")` in the root
    /// package's tests) with `config` (TOML; `--listen` and `--shards` override the file)
    /// on a free port of 127.0.0.1, logging with [`TEST_LOG_FILTER`], and waits until every
    /// shard listens. `name` keeps the temp files of concurrent tests apart.
    pub fn start(bin: impl AsRef<Path>, name: &str, config: &str, shards: usize) -> Relay {
        Self::start_logging(bin, name, config, shards, TEST_LOG_FILTER)
    }

    /// [`Relay::start`] with the log filter `log_filter`.
    pub fn start_logging(
        bin: impl AsRef<Path>,
        name: &str,
        config: &str,
        shards: usize,
        log_filter: &str,
    ) -> Relay {
        Self::start_inner(bin.as_ref(), name, config, shards, log_filter, false, None)
    }

    /// [`Relay::start`] on the RTMP port `port`, known beforehand (a config that names
    /// this relay, such as another relay's push target, can be written first). No retry on
    /// another port: the caller picked this one.
    pub fn start_on_port(
        bin: impl AsRef<Path>,
        name: &str,
        config: &str,
        shards: usize,
        port: u16,
    ) -> Relay {
        Self::start_inner(
            bin.as_ref(),
            name,
            config,
            shards,
            TEST_LOG_FILTER,
            false,
            Some(port),
        )
    }

    /// [`Relay::start`] with an RTMPS listener on a free port too (`--tls-listen`; the
    /// config must name `server.tls_cert_file` and `server.tls_key_file`).
    pub fn start_tls(bin: impl AsRef<Path>, name: &str, config: &str, shards: usize) -> Relay {
        Self::start_inner(
            bin.as_ref(),
            name,
            config,
            shards,
            TEST_LOG_FILTER,
            true,
            None,
        )
    }

    fn start_inner(
        bin: &Path,
        name: &str,
        config: &str,
        shards: usize,
        log_filter: &str,
        with_tls: bool,
        fixed_port: Option<u16>,
    ) -> Relay {
        let config_path = temp_path(&format!("{name}.toml"));
        let log_path = temp_path(&format!("{name}.log"));
        let mut last_log = String::new();
        // A port found free can be taken again before the relay binds it (another test's
        // client); the relay then refuses to start, and we try another port.
        for _ in 0..5 {
            // Written for each attempt: a failed attempt's `Relay` removes its files as it
            // is dropped.
            std::fs::write(&config_path, config).unwrap();
            let [rtmp, mut admin, mut http, mut tls] = free_ports::<4>();
            let port = fixed_port.unwrap_or(rtmp);
            // The caller's port is not held while the others are found: step around it.
            for p in [&mut admin, &mut http, &mut tls] {
                if *p == port {
                    *p = rtmp;
                }
            }
            let admin = SocketAddr::from(([127, 0, 0, 1], admin));
            let http = SocketAddr::from(([127, 0, 0, 1], http));
            let tls = with_tls.then(|| SocketAddr::from(([127, 0, 0, 1], tls)));
            let log = std::fs::File::create(&log_path).unwrap();
            let mut command = Command::new(bin);
            if let Some(tls) = tls {
                command.args(["--tls-listen", &tls.to_string()]);
            }
            let child = command
                .arg("--config")
                .arg(&config_path)
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .args(["--admin-listen", &admin.to_string()])
                .args(["--http-listen", &http.to_string()])
                .args(["--shards", &shards.to_string()])
                .args(["--log", log_filter])
                .env_remove("RUST_LOG")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("the shardcast binary {} runs: {e}", bin.display()));
            let mut relay = Relay {
                child: Some(child),
                port,
                admin,
                http,
                tls,
                config_path: config_path.clone(),
                log_path: log_path.clone(),
            };
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if relay.is_ready() {
                    return relay;
                }
                if let Some(status) = relay.child.as_mut().unwrap().try_wait().unwrap() {
                    last_log = relay.log();
                    relay.child = None;
                    assert!(
                        last_log.contains("already in use"),
                        "the relay exited at start ({status}): {last_log}"
                    );
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
            if relay.child.is_some() {
                panic!(
                    "the relay did not start listening within 15 s: {}",
                    relay.log()
                );
            }
        }
        panic!("no free port for the relay after 5 tries: {last_log}");
    }

    /// The HTTP-FLV URL of `live/{key}`.
    pub fn flv_url(&self, key: &str) -> String {
        format!("http://{}/live/{key}.flv", self.http)
    }

    pub fn url(&self, key: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{key}", self.port)
    }

    /// Everything the relay has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits up to `limit` for a log line for which `pred` holds, and returns it.
    pub fn wait_log(&self, limit: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(line) = self.log().lines().find(|l| pred(l)) {
                return Some(line.to_owned());
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// `/readyz` answers 200: every shard accepts connections.
    pub fn is_ready(&self) -> bool {
        admin::request(self.admin, "GET", "/readyz", &[], b"").is_ok_and(|a| a.status == 200)
    }

    /// `GET path` on the admin listener, as JSON; panics unless it answers 200.
    pub fn api(&self, path: &str) -> serde_json::Value {
        let answer = admin::get(self.admin, path);
        assert_eq!(answer.status, 200, "GET {path}: {}", answer.body);
        answer.json()
    }

    /// Every connected client, as `GET /api/v1/clients` lists them.
    pub fn clients(&self) -> Vec<serde_json::Value> {
        let answer = self.api("/api/v1/clients?count=10000");
        answer["clients"]
            .as_array()
            .cloned()
            .unwrap_or_else(|| panic!("no client list: {answer}"))
    }

    /// The client connected from `peer`, as `GET /api/v1/clients` lists it, waiting up to
    /// `limit` for it to appear.
    pub fn client_by_addr(&self, peer: SocketAddr, limit: Duration) -> Option<serde_json::Value> {
        let deadline = Instant::now() + limit;
        let addr = peer.to_string();
        loop {
            let found = self
                .clients()
                .into_iter()
                .find(|c| c["addr"].as_str() == Some(&addr));
            if found.is_some() || Instant::now() > deadline {
                return found;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to `limit` for the client connected from `peer` to leave the client list
    /// (the relay has closed it, or it left); true once it is gone.
    pub fn wait_client_gone(&self, peer: SocketAddr, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let addr = peer.to_string();
        loop {
            if !self
                .clients()
                .iter()
                .any(|c| c["addr"].as_str() == Some(&addr))
            {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The shard serving the connection from `peer` (from the admin API's client list),
    /// waiting up to `limit` for it to appear.
    pub fn shard_of(&self, peer: SocketAddr, limit: Duration) -> Option<usize> {
        let client = self.client_by_addr(peer, limit)?;
        client["shard"].as_u64().map(|s| s as usize)
    }

    /// `GET /api/v1/streams/{app/key}`'s stream, or None if the relay has no such stream.
    pub fn stream(&self, name: &str) -> Option<serde_json::Value> {
        let answer = admin::get(self.admin, &format!("/api/v1/streams/{name}"));
        (answer.status == 200).then(|| answer.json()["stream"].clone())
    }

    /// Waits up to `limit` until the API says `name` (`app/key`) has an active publisher.
    pub fn wait_published(&self, name: &str, limit: Duration) -> Option<serde_json::Value> {
        self.wait_stream(name, limit, |s| {
            s.is_some_and(|s| s["publish"]["active"] == true)
        })
    }

    /// Waits up to `limit` for `pred` to hold of the stream `name` (None: not there).
    pub fn wait_stream(
        &self,
        name: &str,
        limit: Duration,
        pred: impl Fn(Option<&serde_json::Value>) -> bool,
    ) -> Option<serde_json::Value> {
        let deadline = Instant::now() + limit;
        loop {
            let s = self.stream(name);
            if pred(s.as_ref()) {
                return s;
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// `GET /metrics`: the whole scrape, in Prometheus' text format.
    pub fn metrics(&self) -> String {
        let answer = admin::get(self.admin, "/metrics");
        assert_eq!(answer.status, 200, "GET /metrics: {}", answer.body);
        answer.body
    }

    /// The value of one series on `/metrics` (`name` or `name{label="value",...}`, labels
    /// as the relay writes them, in order), or None if the scrape has no such series.
    pub fn metric(&self, series: &str) -> Option<f64> {
        admin::metric_value(&self.metrics(), series)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the relay runs").id()
    }

    /// The RTMPS URL of `live/{key}`.
    pub fn rtmps_url(&self, key: &str) -> String {
        let tls = self.tls.expect("started with start_tls");
        format!("rtmps://127.0.0.1:{}/live/{key}", tls.port())
    }

    /// Sends SIGHUP (reload the config file, `config_path`).
    pub fn reload(&self) {
        // SAFETY: kill(2) on the pid of a child we have not reaped yet.
        let rc = unsafe { libc::kill(self.pid() as libc::pid_t, libc::SIGHUP) };
        assert_eq!(rc, 0, "SIGHUP delivered");
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        // SAFETY: kill(2) on the pid of a child we have not reaped yet.
        let rc = unsafe { libc::kill(self.pid() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(rc, 0, "SIGTERM delivered");
    }

    /// Waits up to `limit` for the process to exit by itself; None if it is still running.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut()?;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if thread::panicking() {
            // Kept on disk too, with the config, for a closer look.
            eprintln!(
                "--- relay log ({}) ---\n{}",
                self.log_path.display(),
                self.log()
            );
        } else {
            let _ = std::fs::remove_file(&self.log_path);
            let _ = std::fs::remove_file(&self.config_path);
        }
    }
}

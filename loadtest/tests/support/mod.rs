//! Helpers for the load generator's tests: a shardcast started on a free port with a
//! temporary config (killed on drop), and `shardcast-load` runs with a time limit.
#![allow(dead_code)]

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Load runs share 2 cores with everything else: one at a time within this binary.
static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn load_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_shardcast-load"))
}

/// The relay's binary, built beside ours by `cargo test --workspace` (the root package's
/// own integration tests need it).
pub fn shardcast_bin() -> PathBuf {
    let path = load_bin().with_file_name("shardcast");
    assert!(
        path.exists(),
        "{} not found: run the tests with `cargo test --workspace --release`, or `cargo build --release` first",
        path.display()
    );
    path
}

pub fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shardcast-load-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A shardcast process on 127.0.0.1 and a free port, stopped when dropped.
pub struct Shardcast {
    pub port: u16,
    child: Child,
}

impl Shardcast {
    /// Starts one shard with `extra` appended to the config (TOML tables).
    pub fn start(extra: &str) -> Shardcast {
        let port = free_port();
        let config = temp_dir().join(format!("shardcast-{port}.toml"));
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\nshards = 1\n[log]\nfilter = \"warn\"\n{extra}"
            ),
        )
        .unwrap();
        let child = Command::new(shardcast_bin())
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("shardcast starts");
        let mut server = Shardcast { port, child };
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = server.child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                panic!("shardcast exited ({status}) before listening: {err}");
            }
            assert!(
                Instant::now() < deadline,
                "shardcast did not listen on {port} within 15 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, key: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{key}", self.port)
    }
}

impl Drop for Shardcast {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `shardcast-load` with `args`, no progress line.
pub fn load(args: &[&str]) -> Command {
    let mut cmd = Command::new(load_bin());
    cmd.arg("--no-progress")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Waits for a child, killing it (and failing the test) past `limit`.
pub fn wait_output(mut child: Child, limit: Duration) -> Output {
    let start = Instant::now();
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "process ran past {limit:?}; stdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `cmd` to the end within `limit`.
pub fn run(mut cmd: Command, limit: Duration) -> Output {
    wait_output(cmd.spawn().expect("shardcast-load starts"), limit)
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The number on the table line that starts with `name` (first column after the name).
pub fn table_value(table: &str, name: &str) -> Option<f64> {
    table.lines().find_map(|line| {
        let rest = line.trim_start().strip_prefix(name)?;
        if !rest.starts_with("  ") {
            return None;
        }
        rest.split_whitespace().next()?.parse().ok()
    })
}

pub fn tool_exists(name: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

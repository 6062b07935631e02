//! The load generator's tests: `shardcast-load` run with a time limit, the relay it loads
//! (the `shardcast` binary built beside it), one run at a time, and reading its report.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::relay::Relay;
use crate::tools::{temp_dir, wait_output};

/// The log filter of a relay under load: warnings only, and the startup lines (what it
/// listens on), for a failed test's report. [`Relay`] waits for `/readyz`, not for a line.
pub const LOAD_LOG_FILTER: &str = "warn,shardcast::net::runtime=info";

/// Keeps the JSON reports of the runs of one test binary apart.
static REPORTS: AtomicU32 = AtomicU32::new(0);

/// Load runs share 2 cores with everything else: one at a time within a test binary.
static SERIAL: Mutex<()> = Mutex::new(());

/// Holds the other load runs of this test binary off until dropped.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The `shardcast-load` binary under test: `env!("CARGO_BIN_EXE_shardcast-load")`, which
/// only the load generator's own tests know.
#[derive(Clone, Copy, Debug)]
pub struct LoadGenerator(pub &'static str);

impl LoadGenerator {
    /// `shardcast-load` with `args`, no progress line.
    pub fn command(self, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.0);
        cmd.arg("--no-progress")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Runs `shardcast-load` with `args` and `--json` to its end, fails the test (with
    /// what it printed) unless it succeeded, and returns its JSON report and its table
    /// (stdout), the latter for the messages of the test's own assertions.
    ///
    /// The limit is generous: a run ends by itself after its `--duration`, the limit only
    /// bounds how long a hung one takes to fail.
    pub fn run_json(self, args: &[&str]) -> (serde_json::Value, String) {
        let n = REPORTS.fetch_add(1, Ordering::Relaxed);
        let json = temp_dir().join(format!("load-report-{n}.json"));
        let mut cmd = self.command(args);
        cmd.arg("--json").arg(&json);
        let out = run(cmd, Duration::from_secs(120));
        let table = text(&out.stdout);
        assert!(
            out.status.success(),
            "shardcast-load {args:?} failed: {}\n{table}",
            text(&out.stderr)
        );
        let report = std::fs::read_to_string(&json).expect("shardcast-load wrote its JSON report");
        let _ = std::fs::remove_file(&json);
        let report = serde_json::from_str(&report).expect("the JSON report parses");
        (report, table)
    }

    /// The relay's binary, beside ours: `cargo test --workspace` builds it there (the root
    /// package's own integration tests need it).
    pub fn shardcast_bin(self) -> PathBuf {
        let path = Path::new(self.0).with_file_name("shardcast");
        assert!(
            path.exists(),
            "{} not found: run the tests with `cargo test --workspace --release`, or `cargo build --release` first",
            path.display()
        );
        path
    }

    /// A one-shard relay on 127.0.0.1 and a free port to load, logging only warnings;
    /// `name` keeps its temp files apart from other tests'.
    pub fn start_relay(self, name: &str) -> Relay {
        Relay::start_logging(self.shardcast_bin(), name, "", 1, LOAD_LOG_FILTER)
    }
}

/// Runs `cmd` to the end within `limit`.
pub fn run(mut cmd: Command, limit: Duration) -> Output {
    wait_output(cmd.spawn().expect("shardcast-load starts"), limit)
}

/// Output as text.
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

/// The unsigned number at `path` in a JSON report; panics naming the path when there is none.
pub fn json_u64(report: &serde_json::Value, path: &[&str]) -> u64 {
    path.iter()
        .fold(report, |value, key| &value[*key])
        .as_u64()
        .unwrap_or_else(|| panic!("{} is not a number in the report", path.join(".")))
}

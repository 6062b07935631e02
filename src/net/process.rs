//! The process as the kernel sees it: CPU time, memory, threads and file descriptors, read
//! from `/proc/self` for `/metrics` and `/api/v1/summaries`.

use crate::admin::metrics::ProcessStats;

/// Reads what `/proc` says about this process now. Fields it cannot read stay 0.
pub fn process_stats() -> ProcessStats {
    let mut stats = ProcessStats {
        pid: std::process::id(),
        ..ProcessStats::default()
    };
    // SAFETY: sysconf only reads a constant of the running system.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    // SAFETY: as above.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // The command name (field 2) may hold spaces and parentheses: count fields from the
        // last ')'. After it, field 3 (state) is index 0.
        if let Some((_, rest)) = stat.rsplit_once(')') {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            stats.cpu_seconds = (num(11) + num(12)) as f64 / ticks;
            stats.threads = num(17);
            let started_after_boot = num(19) as f64 / ticks;
            stats.virtual_bytes = num(20);
            stats.resident_bytes = num(21) * page;
            if let Some(boot) = boot_time() {
                stats.start_time_seconds = boot + started_after_boot;
            }
        }
    }
    // Not `process_open_fds`: counting /proc/self/fd walks one entry per socket, which on a
    // host with thousands of viewers was a third of a scrape's cost (benches/RESULTS.md).
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        stats.max_fds = limit.rlim_cur;
    }
    stats
}

/// When the machine booted, in Unix seconds (`btime` of `/proc/stat`), read once: the
/// file is long on a many-core host and the answer never changes.
fn boot_time() -> Option<f64> {
    static BOOT: std::sync::OnceLock<Option<f64>> = std::sync::OnceLock::new();
    *BOOT.get_or_init(read_boot_time)
}

fn read_boot_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("btime "))?;
    let secs: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(secs as f64)
}

#[cfg(test)]
mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    use super::*;

    #[test]
    fn reads_this_process() {
        let s = process_stats();
        assert_eq!(s.pid, std::process::id());
        assert!(s.resident_bytes > 0);
        assert!(s.threads >= 1);
        assert!(s.max_fds >= 3);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(s.start_time_seconds > 1.0e9 && s.start_time_seconds <= now + 1.0);
    }
}

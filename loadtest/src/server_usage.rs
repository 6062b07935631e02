//! The server's CPU time and memory, read from `/proc/PID/stat` for the processes named
//! with `--server-pid`: user and system CPU time (fields 14 and 15, in clock ticks) and the
//! resident set (field 24, in pages), summed over the processes.
//!
//! And the load generator's own CPU time, over the same window: the whole process from
//! `getrusage(RUSAGE_SELF)` (microseconds), each executor thread from
//! `/proc/self/task/TID/stat` (clock ticks). If a thread is busy all the time, what the run
//! measures is the generator, not the server.

/// One reading of the server processes.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcSample {
    pub user_seconds: f64,
    pub system_seconds: f64,
    pub rss_bytes: u64,
}

/// Reads every process in `pids` and adds them up.
pub fn sample(pids: &[u32]) -> Result<ProcSample, String> {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    // SAFETY: as above.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    let mut total = ProcSample::default();
    for pid in pids {
        let path = format!("/proc/{pid}/stat");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("server process {pid}: cannot read {path}: {e}"))?;
        let one = parse_stat(&text, ticks, page)
            .ok_or_else(|| format!("server process {pid}: cannot parse {path}"))?;
        total.user_seconds += one.user_seconds;
        total.system_seconds += one.system_seconds;
        total.rss_bytes += one.rss_bytes;
    }
    Ok(total)
}

/// This process's user and system CPU time so far, all threads.
pub fn sample_self() -> ProcSample {
    // SAFETY: an all-zero rusage is valid, and getrusage only writes into it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer cannot fail.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    ProcSample {
        user_seconds: secs(usage.ru_utime),
        system_seconds: secs(usage.ru_stime),
        rss_bytes: 0,
    }
}

/// One thread of this process (by kernel thread id): its user and system CPU time so far.
pub fn sample_thread(tid: i32) -> Result<ProcSample, String> {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let path = format!("/proc/self/task/{tid}/stat");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    parse_stat(&text, ticks, 1).ok_or_else(|| format!("cannot parse {path}"))
}

fn parse_stat(text: &str, ticks_per_second: f64, page_size: u64) -> Option<ProcSample> {
    // The command name (field 2) is in parentheses and may hold spaces; fields after it
    // start at field 3.
    let after = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(ProcSample {
        user_seconds: field(14)? as f64 / ticks_per_second,
        system_seconds: field(15)? as f64 / ticks_per_second,
        rss_bytes: field(24)? * page_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_stat_line() {
        let line = "1234 (shard 0) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 100 \
                    123456789 2560 18446744073709551615";
        let s = parse_stat(line, 100.0, 4096).unwrap();
        assert_eq!(s.user_seconds, 2.5);
        assert_eq!(s.system_seconds, 0.75);
        assert_eq!(s.rss_bytes, 2560 * 4096);
    }

    #[test]
    fn reads_our_own_process() {
        let s = sample(&[std::process::id()]).unwrap();
        assert!(s.rss_bytes > 0);
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(sample_self().user_seconds + sample_self().system_seconds > 0.0);
        assert!(sample_thread(tid).is_ok());
    }
}

//! The server's CPU time and memory, read from `/proc/PID/stat` for the processes named
//! with `--server-pid`: user and system CPU time (fields 14 and 15, in clock ticks) and the
//! resident set (field 24, in pages), summed over the processes.

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
    }
}

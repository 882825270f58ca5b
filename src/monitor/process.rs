//! Process and system counters from Linux `/proc` (nothing elsewhere).
//! The parsers are pure and tested on fixed text.

use std::time::Duration;

/// What `/proc` says about this process right now.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct ProcessCounters {
    /// CPU time used (user + system), if known (in JSON, `cpu_seconds`).
    #[serde(rename = "cpu_seconds", serialize_with = "crate::json::optional_seconds")]
    pub cpu_time: Option<Duration>,
    /// Resident memory in bytes.
    pub resident_memory: Option<u64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// Threads.
    pub threads: Option<u64>,
    /// Bytes received over all interfaces of the process's network namespace.
    pub net_rx_bytes: Option<u64>,
    /// Bytes sent.
    pub net_tx_bytes: Option<u64>,
    /// Bytes this process read from storage.
    pub disk_read_bytes: Option<u64>,
    /// Bytes it wrote.
    pub disk_write_bytes: Option<u64>,
}

/// Clock ticks per second of `/proc/self/stat` times: 100 on every Linux
/// configuration in use (`USER_HZ`), and not readable without libc.
const TICKS_PER_SECOND: u64 = 100;

impl ProcessCounters {
    /// Reads every counter that is available.
    pub fn read() -> Self {
        let text = |path: &str| std::fs::read_to_string(path).ok();
        let mut counters = ProcessCounters::default();
        if let Some(stat) = text("/proc/self/stat") {
            counters.cpu_time = parse_cpu_time(&stat);
        }
        if let Some(status) = text("/proc/self/status") {
            counters.resident_memory = status_field(&status, "VmRSS:").map(|kb| kb * 1024);
            counters.threads = status_field(&status, "Threads:");
        }
        counters.open_fds = std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as u64);
        if let Some(dev) = text("/proc/self/net/dev") {
            let (rx, tx) = parse_net_dev(&dev);
            counters.net_rx_bytes = Some(rx);
            counters.net_tx_bytes = Some(tx);
        }
        if let Some(io) = text("/proc/self/io") {
            counters.disk_read_bytes = status_field(&io, "read_bytes:");
            counters.disk_write_bytes = status_field(&io, "write_bytes:");
        }
        counters
    }
}

/// User + system CPU time from `/proc/self/stat` (fields 14 and 15, after
/// the parenthesised command name, which may itself contain spaces).
fn parse_cpu_time(stat: &str) -> Option<Duration> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state), so fields 14 and 15 are at 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 1000 / TICKS_PER_SECOND))
}

fn status_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(name))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Sums received and sent bytes over the interfaces of `/proc/net/dev`.
fn parse_net_dev(text: &str) -> (u64, u64) {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (_, numbers) = line.split_once(':')?;
            let fields: Vec<u64> = numbers.split_whitespace().filter_map(|f| f.parse().ok()).collect();
            Some((*fields.first()?, *fields.get(8)?))
        })
        .fold((0, 0), |(rx, tx), (r, t)| (rx + r, tx + t))
}

/// CPU use in percent of one core between two readings.
pub fn cpu_percent(before: Option<Duration>, after: Option<Duration>, wall: Duration) -> Option<f64> {
    let used = after?.checked_sub(before?)?;
    if wall.is_zero() {
        return None;
    }
    Some(used.as_secs_f64() * 100.0 / wall.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsers() {
        let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 8 0 100 0 0";
        assert_eq!(parse_cpu_time(stat), Some(Duration::from_secs(3)));
        assert_eq!(parse_cpu_time("garbage"), None);
        let dev = "Inter-|   Receive\n face |bytes packets\n  lo: 100 1 0 0 0 0 0 0 200 2 0 0 0 0 0 0\neth0: 1000 5 0 0 0 0 0 0 3000 7 0 0 0 0 0 0\n";
        assert_eq!(parse_net_dev(dev), (1100, 3200));
        assert_eq!(status_field("VmRSS:\t  2048 kB\n", "VmRSS:"), Some(2048));
        assert_eq!(
            cpu_percent(
                Some(Duration::from_secs(1)),
                Some(Duration::from_millis(1500)),
                Duration::from_secs(1)
            ),
            Some(50.0)
        );
        assert_eq!(cpu_percent(None, Some(Duration::ZERO), Duration::from_secs(1)), None);
        #[cfg(target_os = "linux")]
        {
            let now = ProcessCounters::read();
            assert!(now.resident_memory.unwrap() > 0 && now.open_fds.unwrap() > 0 && now.cpu_time.is_some());
        }
    }
}

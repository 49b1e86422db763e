//! CPU time of processes, from Linux's `/proc/<pid>/stat` (user plus system
//! time of every thread the process has had, finished ones included).

use std::collections::HashMap;
use std::time::Duration;

/// `/proc` counts CPU time in USER_HZ ticks, 100 a second on every Linux ABI.
const TICKS_PER_SECOND: u64 = 100;

/// CPU time used so far by process `pid`, or `None` once it is gone.
pub fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses:
    // state is the first, utime the 12th and stime the 13th.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis(
        (user + system) * 1000 / TICKS_PER_SECOND,
    ))
}

/// CPU time of a running server process, failing loudly if it is gone: a
/// silent zero would turn into a ratio of infinity.
pub fn server_cpu(pid: u32) -> Duration {
    process_cpu(pid).unwrap_or_else(|| panic!("process {pid} is gone"))
}

/// The parent of process `pid`.
pub fn parent_of(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("PPid:"))?
        .trim()
        .parse()
        .ok()
}

/// A process and its children (such as a database server's postmaster and its
/// backends), read at one moment.
pub struct GroupReading {
    per_process: HashMap<u32, Duration>,
}

impl GroupReading {
    pub fn now(parent: u32) -> GroupReading {
        let children = std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
            .unwrap_or_default();
        let pids = children
            .split_whitespace()
            .filter_map(|pid| pid.parse().ok())
            .chain([parent]);
        let per_process = pids
            .filter_map(|pid| Some((pid, process_cpu(pid)?)))
            .collect();
        GroupReading { per_process }
    }

    /// CPU time used since `earlier` by the processes alive now: those started
    /// since count from zero, those ended since are not counted.
    pub fn used_since(&self, earlier: &GroupReading) -> Duration {
        self.per_process
            .iter()
            .map(|(pid, now)| {
                let before = earlier.per_process.get(pid).copied().unwrap_or_default();
                now.saturating_sub(before)
            })
            .sum()
    }
}

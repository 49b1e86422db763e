//! CPU time of processes, from Linux's per-thread scheduler statistics
//! (`/proc/<pid>/task/<tid>/schedstat`, nanoseconds on a CPU).

use std::time::Duration;

/// CPU time used so far by every thread of process `pid` (zero once it is gone).
pub fn process_cpu(pid: u32) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    let nanos: u64 = tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(nanos)
}

/// CPU time used so far by every running process named `name` (as in
/// `/proc/<pid>/comm`), such as the database server's processes.
pub fn named_cpu(name: &str) -> Duration {
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    processes
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim_end() == name)
        })
        .map(process_cpu)
        .sum()
}

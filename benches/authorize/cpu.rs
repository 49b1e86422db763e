//! CPU time of processes, from Linux's `/proc/<pid>/stat` (user plus system
//! time of every thread the process has had, finished ones included), and
//! which CPUs a process group may run on.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

/// `/proc` counts CPU time in USER_HZ ticks, 100 a second on every Linux ABI.
const TICKS_PER_SECOND: u64 = 100;

/// The fields of `/proc/<pid>/stat` after the command name (which may hold
/// spaces, in parentheses): state is the first.
fn stat_fields(pid: u32) -> Option<Vec<u64>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    // State is a letter; every field after it is a number.
    Some(
        after_name
            .split_whitespace()
            .skip(1)
            .map(|field| field.parse().unwrap_or(0))
            .collect(),
    )
}

fn ticks(count: u64) -> Duration {
    Duration::from_millis(count * 1000 / TICKS_PER_SECOND)
}

/// CPU time used so far by process `pid` (utime plus stime, fields 14 and
/// 15), or `None` once it is gone.
pub fn process_cpu(pid: u32) -> Option<Duration> {
    let fields = stat_fields(pid)?;
    Some(ticks(fields.get(10)? + fields.get(11)?))
}

/// CPU time used so far by the reaped children of process `pid` (cutime plus
/// cstime, fields 16 and 17).
fn reaped_children_cpu(pid: u32) -> Option<Duration> {
    let fields = stat_fields(pid)?;
    Some(ticks(fields.get(12)? + fields.get(13)?))
}

/// CPU time of a process that must still be running (a server, or this
/// bench), failing loudly if it is gone: a silent zero would turn into a ratio
/// of infinity.
pub fn live_process_cpu(pid: u32) -> Duration {
    process_cpu(pid).unwrap_or_else(|| panic!("process {pid} is gone"))
}

/// The name of process `pid`, as in `/proc/<pid>/comm`.
pub fn name_of(pid: u32) -> Option<String> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(comm.trim_end().to_owned())
}

/// The value of one line of `/proc/<pid>/status` (`field` with its colon).
fn status_field(pid: u32, field: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let value = status.lines().find_map(|line| line.strip_prefix(field))?;
    Some(value.trim().to_owned())
}

/// The processes process `pid` has started and that are still running;
/// `None` if the kernel does not list them.
fn children_of(pid: u32) -> Option<Vec<u32>> {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    Some(
        children
            .split_whitespace()
            .filter_map(|child| child.parse().ok())
            .collect(),
    )
}

/// The parent of process `pid`.
pub fn parent_of(pid: u32) -> Option<u32> {
    status_field(pid, "PPid:")?.parse().ok()
}

/// The database server's main process, found from one of its backends'
/// process ids; panics unless both are local `postgres` processes (a server in
/// another PID namespace cannot be measured from here).
pub fn postmaster_of(backend: u32) -> u32 {
    let is_postgres = |pid: u32| name_of(pid).as_deref() == Some("postgres");
    assert!(
        is_postgres(backend),
        "backend {backend} is not a local postgres process"
    );
    let postmaster = parent_of(backend).expect("the backend has no parent");
    assert!(
        is_postgres(postmaster),
        "the backend's parent {postmaster} is not postgres"
    );
    postmaster
}

/// A process and its children (such as a database server's postmaster and its
/// backends), read at one moment.
pub struct GroupReading {
    per_process: HashMap<u32, Duration>,
    reaped: Duration,
}

impl GroupReading {
    /// Reads the group again until no child was reaped while it was being
    /// read (a child seen alive and then in the parent's reaped total would
    /// count twice).
    pub fn now(parent: u32) -> GroupReading {
        loop {
            let reaped = reaped_children_cpu(parent).expect("the database server is gone");
            let children = children_of(parent)
                .expect("this kernel does not list a process's children in /proc");
            let per_process = children
                .into_iter()
                .chain([parent])
                .filter_map(|pid| Some((pid, process_cpu(pid)?)))
                .collect();
            if reaped_children_cpu(parent) == Some(reaped) {
                return GroupReading {
                    per_process,
                    reaped,
                };
            }
        }
    }

    /// CPU time the group used since `earlier`: processes started since count
    /// from zero, and those that ended since count through their parent's
    /// total for reaped children, less what `earlier` had already seen.
    pub fn used_since(&self, earlier: &GroupReading) -> Duration {
        let alive: Duration = self
            .per_process
            .iter()
            .map(|(pid, now)| {
                let before = earlier.per_process.get(pid).copied().unwrap_or_default();
                now.saturating_sub(before)
            })
            .sum();
        let ended_seen_before: Duration = earlier
            .per_process
            .iter()
            .filter(|(pid, _)| !self.per_process.contains_key(pid))
            .map(|(_, before)| *before)
            .sum();
        let ended = self
            .reaped
            .saturating_sub(earlier.reaped)
            .saturating_sub(ended_seen_before);
        alive + ended
    }
}

/// The database server's processes, pinned to one CPU while this lives: a
/// deployment runs its database on other hosts than Keygate's replicas, so
/// here it runs beside the load generator, off the replicas' CPU. Dropping it
/// (also when the bench panics) gives them back the CPUs the postmaster had;
/// a bench killed by a signal leaves them pinned, and says how to undo it.
pub struct PinnedDatabase {
    postmaster: u32,
    original_cpus: String,
}

impl PinnedDatabase {
    /// Pins the postmaster, then every process it has started (backends it
    /// starts later inherit its CPU); `None`, with a warning, if it cannot.
    pub fn pin(postmaster: u32, cpu: usize) -> Option<PinnedDatabase> {
        let Some(mut original_cpus) = allowed_cpus(postmaster) else {
            eprintln!("warning: cannot read the database server's CPUs; left as it is");
            return None;
        };
        if original_cpus == cpu.to_string() {
            // Most likely left so by a bench that was killed: give it every
            // online CPU afterwards.
            let online = std::fs::read_to_string("/sys/devices/system/cpu/online");
            original_cpus = online.map_or(original_cpus, |cpus| cpus.trim().to_owned());
            eprintln!(
                "warning: the database server was already pinned to CPU {cpu}; it gets CPUs {original_cpus} afterwards"
            );
        }
        if !set_group_affinity(postmaster, &cpu.to_string()) {
            eprintln!("warning: could not pin the database server to CPU {cpu}");
            return None;
        }
        eprintln!(
            "database server pinned to CPU {cpu} until the bench ends (if it is killed: \
             taskset -a -p -c {original_cpus} <pid> for the postmaster and each of its children)"
        );
        Some(PinnedDatabase {
            postmaster,
            original_cpus,
        })
    }
}

impl Drop for PinnedDatabase {
    fn drop(&mut self) {
        if !set_group_affinity(self.postmaster, &self.original_cpus) {
            eprintln!(
                "warning: the database server may still be pinned; its CPUs were {}",
                self.original_cpus
            );
        }
    }
}

/// The CPUs process `pid` may run on, in `taskset -c` list syntax.
fn allowed_cpus(pid: u32) -> Option<String> {
    status_field(pid, "Cpus_allowed_list:")
}

/// Sets the CPUs of process `parent`, then of its children (`taskset -c` list
/// syntax; a child started in between inherits them from the parent);
/// whether the parent took them (a child may end meanwhile).
fn set_group_affinity(parent: u32, cpus: &str) -> bool {
    if !set_affinity(parent, cpus) {
        return false;
    }
    for child in children_of(parent).unwrap_or_default() {
        set_affinity(child, cpus);
    }
    true
}

/// Sets the CPUs of every thread of process `pid` (`taskset -c` list
/// syntax); whether `taskset` did.
pub fn set_affinity(pid: u32, cpus: &str) -> bool {
    std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Where the database server runs during the bench: beside the load
/// generator on CPU 1 (as on hosts of its own in a deployment), unless
/// `KEYGATE_BENCH_DATABASE_CPU=any` leaves it on every CPU, the servers' too.
pub fn pin_database(postmaster: u32) -> Option<PinnedDatabase> {
    match std::env::var("KEYGATE_BENCH_DATABASE_CPU").as_deref() {
        Ok("any") => {
            println!("database server: on every CPU, the servers' too");
            return None;
        }
        Ok("1") | Err(_) => {}
        Ok(other) => panic!("KEYGATE_BENCH_DATABASE_CPU is `any` or `1`, not {other:?}"),
    }
    let pinned = PinnedDatabase::pin(postmaster, 1)?;
    println!("database server: pinned to CPU 1, beside the load generator");
    Some(pinned)
}

//! CPU time of other processes (the servers under test, Redis) over a
//! scenario's measured phase, read when the phase starts and when it ends:
//! the sum over the process's threads of `/proc/PID/task/TID/schedstat`
//! (time on a CPU, in nanoseconds), or, where the kernel has no schedstat,
//! `/proc/PID/stat` (utime + stime, in 10 ms ticks: too coarse for short
//! runs). A thread that exits within the window takes its time with it in
//! the first source; the servers measured here keep their threads.
//!
//! `--cpu-pid ROLE=PID` (repeatable, e.g. `server=123 --cpu-pid redis=456`)
//! names the processes; the load tool adds itself as role `load` (on a
//! small machine its own share bounds what the servers can reach). The
//! JSON gets `cpu_by_process` with each role's total and its microseconds
//! per unit of work (delivered message, delivery or handshake, whichever
//! the scenario reports).

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde_json::{json, Map, Value};

/// Linux reports process times in USER_HZ ticks, 100 per second on every
/// architecture this runs on (the kernel ABI constant, not CONFIG_HZ).
const TICKS_PER_S: f64 = 100.0;

/// `ROLE=PID`, for clap.
pub(crate) fn parse_cpu_pid(s: &str) -> Result<(String, u32), String> {
    let (role, pid) = s
        .split_once('=')
        .ok_or_else(|| format!("{s}: expected ROLE=PID, e.g. server=1234"))?;
    let pid = pid
        .parse()
        .map_err(|_| format!("{s}: {pid} is not a pid"))?;
    if role.is_empty() {
        return Err(format!("{s}: empty role"));
    }
    Ok((role.to_owned(), pid))
}

/// CPU time of `pid` in nanoseconds, from the clock the meter chose once
/// (so both ends of a window come from the same source): per-thread
/// schedstat, or utime + stime (ticks) where the kernel has no schedstat.
fn cpu_ns(pid: u32, schedstat: bool) -> Result<u64, String> {
    if schedstat {
        schedstat_ns(pid)
    } else {
        ticks(pid).map(|t| t * (1_000_000_000 / TICKS_PER_S as u64))
    }
}

/// Sum of the first field of `/proc/PID/task/*/schedstat` (ns on a CPU).
fn schedstat_ns(pid: u32) -> Result<u64, String> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/task")).map_err(|e| e.to_string())?;
    let mut total = 0u64;
    for task in dir.flatten() {
        // A thread may end between the listing and the read: skip it.
        let Ok(s) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        total += s
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| format!("/proc/{pid}/task: unreadable schedstat"))?;
    }
    if total == 0 {
        return Err("schedstat reads 0".into());
    }
    Ok(total)
}

/// utime + stime of `pid`, in ticks.
fn ticks(pid: u32) -> Result<u64, String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("cannot read /proc/{pid}/stat: {e}"))?;
    // The command name (field 2) may hold spaces and parentheses: the
    // fields after the last ')' start at field 3 (state).
    let rest = s
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| format!("/proc/{pid}/stat: no ')'"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15: indexes 11 and 12 from field 3.
    let field = |i: usize| -> Result<u64, String> {
        f.get(i)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("/proc/{pid}/stat: field {} missing", i + 3))
    };
    Ok(field(11)? + field(12)?)
}

/// CPU nanoseconds of every named process at one instant.
#[derive(Clone)]
struct Snapshot {
    at: Instant,
    /// Wall clock, to match the window with other processes' logs.
    wall: SystemTime,
    ns: Vec<Result<u64, String>>,
}

/// The processes to watch and the measured window (shared by the
/// scenario, which marks it, and `main`, which reports it).
#[derive(Clone, Default)]
pub(crate) struct CpuMeter {
    pids: Arc<Vec<(String, u32)>>,
    /// The clock: per-thread schedstat (ns), or, without it, ticks.
    schedstat: bool,
    window: Arc<Mutex<(Option<Snapshot>, Option<Snapshot>)>>,
}

impl CpuMeter {
    pub(crate) fn new(mut pids: Vec<(String, u32)>) -> CpuMeter {
        if !pids.is_empty() {
            pids.push(("load".to_owned(), std::process::id()));
        }
        CpuMeter {
            pids: Arc::new(pids),
            schedstat: schedstat_ns(std::process::id()).is_ok(),
            window: Arc::default(),
        }
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            at: Instant::now(),
            wall: SystemTime::now(),
            ns: self
                .pids
                .iter()
                .map(|(_, pid)| cpu_ns(*pid, self.schedstat))
                .collect(),
        }
    }

    /// The measured phase starts now.
    pub(crate) fn start(&self) {
        if !self.pids.is_empty() {
            *self.window.lock() = (Some(self.snapshot()), None);
        }
    }

    /// The measured phase ended now.
    pub(crate) fn stop(&self) {
        if !self.pids.is_empty() {
            self.window.lock().1 = Some(self.snapshot());
        }
    }

    /// CPU microseconds of each role over the window, and per unit of
    /// work; `None` when no process was named or the scenario marked no
    /// window.
    pub(crate) fn report(&self, units: Option<f64>) -> Option<Value> {
        let (Some(a), Some(b)) = self.window.lock().clone() else {
            return None;
        };
        let mut roles: Map<String, Value> = Map::new();
        let mut processes: Map<String, Value> = Map::new();
        let mut errors = Vec::new();
        let mut total = 0.0;
        for (i, (role, pid)) in self.pids.iter().enumerate() {
            let us = match (&a.ns[i], &b.ns[i]) {
                (Ok(x), Ok(y)) => y.saturating_sub(*x) as f64 / 1e3,
                (Err(e), _) | (_, Err(e)) => {
                    errors.push(e.clone());
                    continue;
                }
            };
            total += us;
            processes.insert(format!("{role}:{pid}"), json!(us));
            let sum = roles.get(role).and_then(Value::as_f64).unwrap_or(0.0) + us;
            roles.insert(role.clone(), json!(sum));
        }
        let mut out = Map::new();
        out.insert(
            "window_s".into(),
            json!(b.at.duration_since(a.at).as_secs_f64()),
        );
        let unix = |t: SystemTime| {
            t.duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64())
        };
        out.insert("window_unix_s".into(), json!([unix(a.wall), unix(b.wall)]));
        out.insert("units".into(), json!(units));
        // Which clock: per-thread schedstat (ns) or, without it, 10 ms ticks.
        out.insert(
            "source".into(),
            json!(if self.schedstat {
                "schedstat"
            } else {
                "stat_ticks"
            }),
        );
        for (role, us) in &roles {
            let us = us.as_f64().unwrap_or(0.0);
            out.insert(format!("{role}_us"), json!(us));
            out.insert(
                format!("{role}_us_per_unit"),
                json!(units.filter(|u| *u > 0.0).map(|u| us / u)),
            );
        }
        out.insert(
            "total_us_per_unit".into(),
            json!(units.filter(|u| *u > 0.0).map(|u| total / u)),
        );
        out.insert("processes".into(), Value::Object(processes));
        if !errors.is_empty() {
            out.insert("errors".into(), json!(errors));
        }
        Some(Value::Object(out))
    }
}

/// The unit of work a scenario's result counts: delivered messages,
/// deliveries, handshakes, or echoed messages.
pub(crate) fn units(result: &Value) -> Option<f64> {
    ["delivered", "deliveries", "opened", "messages"]
        .iter()
        .find_map(|k| result.get(*k).and_then(Value::as_f64))
}

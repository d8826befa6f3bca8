//! The running process' own metrics, under the names Prometheus client
//! libraries use: `process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! `process_virtual_memory_bytes`, `process_start_time_seconds`,
//! `process_open_fds`, `process_max_fds`, `process_threads`.

use std::path::{Path, PathBuf};

use crate::Collected;
use crate::host::CollectError;

/// Reads `/proc/<pid>/…` (normally `/proc/self`) and `/proc/stat` for the boot time.
#[derive(Debug, Clone)]
pub struct ProcessCollector {
    procfs: PathBuf,
    pid_dir: PathBuf,
}

impl Default for ProcessCollector {
    fn default() -> Self {
        ProcessCollector::new("/proc", "self")
    }
}

impl ProcessCollector {
    pub fn new(procfs: impl Into<PathBuf>, pid: &str) -> Self {
        let procfs = procfs.into();
        ProcessCollector {
            pid_dir: procfs.join(pid),
            procfs,
        }
    }

    pub fn collect(&self) -> Result<Collected, CollectError> {
        let read = |p: PathBuf| {
            std::fs::read_to_string(&p).map_err(|source| CollectError::Read { path: p, source })
        };
        let stat_path = self.pid_dir.join("stat");
        let stat = read(stat_path.clone())?;
        // Fields after the command name, which is in parentheses and may hold spaces.
        let after =
            stat.rfind(')')
                .map(|i| &stat[i + 1..])
                .ok_or_else(|| CollectError::Format {
                    path: stat_path.clone(),
                    line: stat.clone(),
                })?;
        let f: Vec<&str> = after.split_ascii_whitespace().collect();
        // after ')': state(0) ppid(1) … utime(11) stime(12) … num_threads(17) … starttime(19) vsize(20) rss(21)
        let num = |i: usize| -> Result<f64, CollectError> {
            f.get(i)
                .and_then(|x| x.parse::<f64>().ok())
                .ok_or_else(|| CollectError::Format {
                    path: stat_path.clone(),
                    line: stat.clone(),
                })
        };
        let ticks = f64::from(rustix::param::clock_ticks_per_second() as u32);
        let page = rustix::param::page_size() as f64;
        let boot = read(self.procfs.join("stat"))?
            .lines()
            .find_map(|l| {
                l.strip_prefix("btime ")
                    .and_then(|v| v.trim().parse::<f64>().ok())
            })
            .unwrap_or(0.0);

        let mut out = Collected::default();
        out.counter(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            &[],
            (num(11)? + num(12)?) / ticks,
        );
        out.gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            &[],
            num(21)? * page,
        );
        out.gauge(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            &[],
            num(20)?,
        );
        out.gauge(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            &[],
            boot + num(19)? / ticks,
        );
        out.gauge(
            "process_threads",
            "Number of OS threads in the process.",
            &[],
            num(17)?,
        );
        if let Ok(n) = count_dir(&self.pid_dir.join("fd")) {
            out.gauge(
                "process_open_fds",
                "Number of open file descriptors.",
                &[],
                n as f64,
            );
        }
        if let Ok(limits) = std::fs::read_to_string(self.pid_dir.join("limits")) {
            let max = limits
                .lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| {
                    l["Max open files".len()..]
                        .split_ascii_whitespace()
                        .next()
                        .and_then(|v| v.parse::<f64>().ok())
                });
            if let Some(m) = max {
                out.gauge(
                    "process_max_fds",
                    "Maximum number of open file descriptors.",
                    &[],
                    m,
                );
            }
        }
        Ok(out)
    }
}

fn count_dir(p: &Path) -> std::io::Result<usize> {
    Ok(std::fs::read_dir(p)?.count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_fixture_process() {
        let d = tempfile::tempdir().unwrap();
        let pid = d.path().join("42");
        std::fs::create_dir_all(pid.join("fd")).unwrap();
        for i in 0..3 {
            std::fs::write(pid.join("fd").join(i.to_string()), "").unwrap();
        }
        std::fs::write(d.path().join("stat"), "cpu 1 2 3\nbtime 1000\n").unwrap();
        // name with a space and a parenthesis, as the kernel allows
        std::fs::write(
            pid.join("stat"),
            "42 (my (prog) x) S 1 42 42 0 -1 0 0 0 0 0 250 50 0 0 20 0 7 0 500 1048576 10 0 0",
        )
        .unwrap();
        std::fs::write(pid.join("limits"), "Limit Soft Hard Units\nMax open files            1024                 4096                 files\n").unwrap();
        let out = ProcessCollector::new(d.path(), "42").collect().unwrap();
        let ticks = f64::from(rustix::param::clock_ticks_per_second() as u32);
        assert_eq!(
            out.value("process_cpu_seconds_total", &[]),
            Some(300.0 / ticks)
        );
        assert_eq!(out.value("process_threads", &[]), Some(7.0));
        assert_eq!(
            out.value("process_virtual_memory_bytes", &[]),
            Some(1048576.0)
        );
        assert_eq!(
            out.value("process_resident_memory_bytes", &[]),
            Some(10.0 * rustix::param::page_size() as f64)
        );
        assert_eq!(
            out.value("process_start_time_seconds", &[]),
            Some(1000.0 + 500.0 / ticks)
        );
        assert_eq!(out.value("process_open_fds", &[]), Some(3.0));
        assert_eq!(out.value("process_max_fds", &[]), Some(1024.0));
    }

    #[test]
    fn this_process() {
        let out = ProcessCollector::default().collect().unwrap();
        assert!(out.value("process_resident_memory_bytes", &[]).unwrap() > 0.0);
        assert!(out.value("process_open_fds", &[]).unwrap() >= 3.0);
    }
}

//! Host metrics under node-exporter's names and labels.
//!
//! Each collector parses one kernel file (`/proc/stat`, `/proc/meminfo`,
//! `/proc/loadavg`, `/proc/net/dev`, `/proc/diskstats`, `/proc/mounts` with
//! `statvfs`) into [`Collected`] series. A collector that fails (file
//! missing, unexpected format) is reported as
//! `node_scrape_collector_success{collector="…"} 0` and the others still
//! run, as node exporter does. The procfs root is a parameter (node
//! exporter's `--path.procfs`), so tests feed fixture files.
//!
//! Units follow node exporter: seconds (from USER_HZ ticks or
//! milliseconds), bytes (from kB or 512-byte sectors).

use std::path::{Path, PathBuf};

use crate::Collected;

/// Partitions are not reported, only whole disks (node exporter's default
/// `--collector.diskstats.device-exclude`).
const DISK_EXCLUDE: &str = r"^(z?ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p)\d+$";
/// Pseudo file systems node exporter skips by default.
const FS_TYPES_EXCLUDE: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "fusectl",
    "hugetlbfs",
    "iso9660",
    "mqueue",
    "nsfs",
    "overlay",
    "proc",
    "procfs",
    "pstore",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "squashfs",
    "sysfs",
    "tracefs",
];
/// Mount points node exporter skips by default (and everything below them).
const MOUNT_EXCLUDE: &[&str] = &[
    "/dev",
    "/proc",
    "/sys",
    "/run/credentials/",
    "/var/lib/docker/",
    "/var/lib/containers/storage/",
];

/// Why one collector produced nothing.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: unexpected format in line {line:?}")]
    Format { path: PathBuf, line: String },
}

/// Collects host metrics from a procfs root (normally `/proc`).
#[derive(Debug, Clone)]
pub struct HostCollector {
    procfs: PathBuf,
    /// Whether to call `statvfs` on mount points (off for fixture roots).
    statvfs: bool,
    ticks_per_second: f64,
    disk_exclude: regex::Regex,
}

impl Default for HostCollector {
    fn default() -> Self {
        HostCollector::new("/proc", true)
    }
}

type Step = fn(&HostCollector, &mut Collected) -> Result<(), CollectError>;

impl HostCollector {
    pub fn new(procfs: impl Into<PathBuf>, statvfs: bool) -> Self {
        HostCollector {
            procfs: procfs.into(),
            statvfs,
            ticks_per_second: f64::from(rustix::param::clock_ticks_per_second() as u32),
            disk_exclude: regex::Regex::new(DISK_EXCLUDE).expect("bug: constant regex"),
        }
    }

    fn read(&self, name: &str) -> Result<(PathBuf, String), CollectError> {
        let path = self.procfs.join(name);
        match std::fs::read_to_string(&path) {
            Ok(s) => Ok((path, s)),
            Err(source) => Err(CollectError::Read { path, source }),
        }
    }

    /// Runs every collector; failures become `node_scrape_collector_success 0`.
    pub fn collect(&self, now_secs: f64) -> Collected {
        let mut out = Collected::default();
        let steps: [(&str, Step); 7] = [
            ("cpu", Self::stat),
            ("meminfo", Self::meminfo),
            ("loadavg", Self::loadavg),
            ("netdev", Self::netdev),
            ("diskstats", Self::diskstats),
            ("filesystem", Self::filesystem),
            ("uname", Self::uname),
        ];
        for (name, step) in steps {
            let mut part = Collected::default();
            let ok = step(self, &mut part).is_ok();
            if ok {
                out.extend(part);
            }
            out.gauge(
                "node_scrape_collector_success",
                "node_exporter: Whether a collector succeeded.",
                &[("collector", name)],
                if ok { 1.0 } else { 0.0 },
            );
        }
        out.gauge(
            "node_time_seconds",
            "System time in seconds since epoch (1970).",
            &[],
            now_secs,
        );
        out
    }

    /// `/proc/stat`: CPU time per CPU and mode, interrupts, context switches,
    /// boot time, forks, running/blocked processes.
    fn stat(&self, out: &mut Collected) -> Result<(), CollectError> {
        let (path, text) = self.read("stat")?;
        let bad = |line: &str| CollectError::Format {
            path: path.clone(),
            line: line.to_string(),
        };
        for line in text.lines() {
            let mut f = line.split_ascii_whitespace();
            let Some(key) = f.next() else { continue };
            if let Some(cpu) = key.strip_prefix("cpu").filter(|c| !c.is_empty()) {
                let ticks: Vec<f64> = f
                    .map(|x| x.parse::<f64>().map_err(|_| bad(line)))
                    .collect::<Result<_, _>>()?;
                const MODES: [&str; 8] = [
                    "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
                ];
                for (mode, t) in MODES.iter().zip(&ticks) {
                    out.counter(
                        "node_cpu_seconds_total",
                        "Seconds the CPUs spent in each mode.",
                        &[("cpu", cpu), ("mode", mode)],
                        t / self.ticks_per_second,
                    );
                }
                for (i, mode) in [(8, "user"), (9, "nice")] {
                    if let Some(t) = ticks.get(i) {
                        out.counter(
                            "node_cpu_guest_seconds_total",
                            "Seconds the CPUs spent in guests (VMs) for each mode.",
                            &[("cpu", cpu), ("mode", mode)],
                            t / self.ticks_per_second,
                        );
                    }
                }
                continue;
            }
            let first = || {
                f.clone()
                    .next()
                    .and_then(|x| x.parse::<f64>().ok())
                    .ok_or_else(|| bad(line))
            };
            match key {
                "intr" => out.counter(
                    "node_intr_total",
                    "Total number of interrupts serviced.",
                    &[],
                    first()?,
                ),
                "ctxt" => out.counter(
                    "node_context_switches_total",
                    "Total number of context switches.",
                    &[],
                    first()?,
                ),
                "btime" => out.gauge(
                    "node_boot_time_seconds",
                    "Node boot time, in unixtime.",
                    &[],
                    first()?,
                ),
                "processes" => {
                    out.counter("node_forks_total", "Total number of forks.", &[], first()?)
                }
                "procs_running" => out.gauge(
                    "node_procs_running",
                    "Number of processes in runnable state.",
                    &[],
                    first()?,
                ),
                "procs_blocked" => out.gauge(
                    "node_procs_blocked",
                    "Number of processes blocked waiting for I/O to complete.",
                    &[],
                    first()?,
                ),
                _ => {}
            }
        }
        Ok(())
    }

    /// `/proc/meminfo`: `node_memory_<Field>_bytes` (kB → bytes), or
    /// `node_memory_<Field>` for counts; `Active(anon)` → `Active_anon`.
    fn meminfo(&self, out: &mut Collected) -> Result<(), CollectError> {
        let (path, text) = self.read("meminfo")?;
        for line in text.lines() {
            let bad = || CollectError::Format {
                path: path.clone(),
                line: line.to_string(),
            };
            let (key, rest) = line.split_once(':').ok_or_else(bad)?;
            let mut f = rest.split_ascii_whitespace();
            let v: f64 = f.next().and_then(|x| x.parse().ok()).ok_or_else(bad)?;
            let key = key.replace('(', "_").replace(')', "");
            match f.next() {
                Some("kB") => out.gauge(
                    &format!("node_memory_{key}_bytes"),
                    &format!("Memory information field {key}_bytes."),
                    &[],
                    v * 1024.0,
                ),
                _ => out.gauge(
                    &format!("node_memory_{key}"),
                    &format!("Memory information field {key}."),
                    &[],
                    v,
                ),
            }
        }
        Ok(())
    }

    fn loadavg(&self, out: &mut Collected) -> Result<(), CollectError> {
        let (path, text) = self.read("loadavg")?;
        let f: Vec<f64> = text
            .split_ascii_whitespace()
            .take(3)
            .filter_map(|x| x.parse().ok())
            .collect();
        if f.len() != 3 {
            return Err(CollectError::Format { path, line: text });
        }
        out.gauge("node_load1", "1m load average.", &[], f[0]);
        out.gauge("node_load5", "5m load average.", &[], f[1]);
        out.gauge("node_load15", "15m load average.", &[], f[2]);
        Ok(())
    }

    /// `/proc/net/dev`: per-device receive and transmit counters.
    fn netdev(&self, out: &mut Collected) -> Result<(), CollectError> {
        const RX: [&str; 8] = [
            "bytes",
            "packets",
            "errs",
            "drop",
            "fifo",
            "frame",
            "compressed",
            "multicast",
        ];
        const TX: [&str; 8] = [
            "bytes",
            "packets",
            "errs",
            "drop",
            "fifo",
            "colls",
            "carrier",
            "compressed",
        ];
        let (path, text) = self.read("net/dev")?;
        for line in text.lines().skip(2) {
            let bad = || CollectError::Format {
                path: path.clone(),
                line: line.to_string(),
            };
            let (dev, rest) = line.split_once(':').ok_or_else(bad)?;
            let dev = dev.trim();
            let v: Vec<f64> = rest
                .split_ascii_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            if v.len() < 16 {
                return Err(bad());
            }
            for (dir, names, vals) in [("receive", RX, &v[..8]), ("transmit", TX, &v[8..16])] {
                for (n, x) in names.iter().zip(vals) {
                    out.counter(
                        &format!("node_network_{dir}_{n}_total"),
                        &format!("Network device statistic {dir}_{n}."),
                        &[("device", dev)],
                        *x,
                    );
                }
            }
        }
        Ok(())
    }

    /// `/proc/diskstats`: per whole disk (partitions skipped) I/O counters.
    fn diskstats(&self, out: &mut Collected) -> Result<(), CollectError> {
        // (field index after major/minor/name, name, help, scale)
        const FIELDS: [(usize, &str, &str, f64); 17] = [
            (
                0,
                "node_disk_reads_completed_total",
                "The total number of reads completed successfully.",
                1.0,
            ),
            (
                1,
                "node_disk_reads_merged_total",
                "The total number of reads merged.",
                1.0,
            ),
            (
                2,
                "node_disk_read_bytes_total",
                "The total number of bytes read successfully.",
                512.0,
            ),
            (
                3,
                "node_disk_read_time_seconds_total",
                "The total number of seconds spent by all reads.",
                0.001,
            ),
            (
                4,
                "node_disk_writes_completed_total",
                "The total number of writes completed successfully.",
                1.0,
            ),
            (
                5,
                "node_disk_writes_merged_total",
                "The number of writes merged.",
                1.0,
            ),
            (
                6,
                "node_disk_written_bytes_total",
                "The total number of bytes written successfully.",
                512.0,
            ),
            (
                7,
                "node_disk_write_time_seconds_total",
                "This is the total number of seconds spent by all writes.",
                0.001,
            ),
            (
                8,
                "node_disk_io_now",
                "The number of I/Os currently in progress.",
                1.0,
            ),
            (
                9,
                "node_disk_io_time_seconds_total",
                "Total seconds spent doing I/Os.",
                0.001,
            ),
            (
                10,
                "node_disk_io_time_weighted_seconds_total",
                "The weighted # of seconds spent doing I/Os.",
                0.001,
            ),
            (
                11,
                "node_disk_discards_completed_total",
                "The total number of discards completed successfully.",
                1.0,
            ),
            (
                12,
                "node_disk_discards_merged_total",
                "The total number of discards merged.",
                1.0,
            ),
            (
                13,
                "node_disk_discarded_sectors_total",
                "The total number of sectors discarded successfully.",
                1.0,
            ),
            (
                14,
                "node_disk_discard_time_seconds_total",
                "This is the total number of seconds spent by all discards.",
                0.001,
            ),
            (
                15,
                "node_disk_flush_requests_total",
                "The total number of flush requests completed successfully",
                1.0,
            ),
            (
                16,
                "node_disk_flush_requests_time_seconds_total",
                "This is the total number of seconds spent by all flush requests.",
                0.001,
            ),
        ];
        let (path, text) = self.read("diskstats")?;
        for line in text.lines() {
            let f: Vec<&str> = line.split_ascii_whitespace().collect();
            if f.len() < 14 {
                return Err(CollectError::Format {
                    path,
                    line: line.to_string(),
                });
            }
            let dev = f[2];
            if self.disk_exclude.is_match(dev) {
                continue;
            }
            let vals: Vec<f64> = f[3..].iter().filter_map(|x| x.parse().ok()).collect();
            for (i, name, help, scale) in FIELDS {
                if let Some(v) = vals.get(i) {
                    let kind = if name.ends_with("_total") {
                        model::MetricType::Counter
                    } else {
                        model::MetricType::Gauge
                    };
                    out.add(name, kind, help, &[("device", dev)], v * scale);
                }
            }
        }
        Ok(())
    }

    /// `/proc/mounts` + `statvfs`: size, free, available, inodes, read-only.
    fn filesystem(&self, out: &mut Collected) -> Result<(), CollectError> {
        let (_, text) = self.read("mounts")?;
        let mut seen = std::collections::HashSet::new();
        for line in text.lines() {
            let f: Vec<&str> = line.split_ascii_whitespace().collect();
            let [device, mountpoint, fstype, options, ..] = f[..] else {
                continue;
            };
            let mountpoint = unescape_mount(mountpoint);
            if FS_TYPES_EXCLUDE.contains(&fstype)
                || MOUNT_EXCLUDE.iter().any(|m| {
                    mountpoint == m.trim_end_matches('/')
                        || mountpoint.starts_with(&format!("{}/", m.trim_end_matches('/')))
                })
                || !seen.insert((device.to_string(), mountpoint.clone()))
            {
                continue;
            }
            let labels = [
                ("device", device),
                ("fstype", fstype),
                ("mountpoint", mountpoint.as_str()),
            ];
            let ro = options.split(',').any(|o| o == "ro");
            out.gauge(
                "node_filesystem_readonly",
                "Filesystem read-only status.",
                &labels,
                if ro { 1.0 } else { 0.0 },
            );
            if !self.statvfs {
                continue;
            }
            match rustix::fs::statvfs(Path::new(&mountpoint)) {
                Ok(s) => {
                    let bs = s.f_frsize as f64;
                    out.gauge(
                        "node_filesystem_size_bytes",
                        "Filesystem size in bytes.",
                        &labels,
                        s.f_blocks as f64 * bs,
                    );
                    out.gauge(
                        "node_filesystem_free_bytes",
                        "Filesystem free space in bytes.",
                        &labels,
                        s.f_bfree as f64 * bs,
                    );
                    out.gauge(
                        "node_filesystem_avail_bytes",
                        "Filesystem space available to non-root users in bytes.",
                        &labels,
                        s.f_bavail as f64 * bs,
                    );
                    out.gauge(
                        "node_filesystem_files",
                        "Filesystem total file nodes.",
                        &labels,
                        s.f_files as f64,
                    );
                    out.gauge(
                        "node_filesystem_files_free",
                        "Filesystem total free file nodes.",
                        &labels,
                        s.f_ffree as f64,
                    );
                    out.gauge(
                        "node_filesystem_device_error",
                        "Whether an error occurred while getting statistics for the given device.",
                        &labels,
                        0.0,
                    );
                }
                Err(_) => out.gauge(
                    "node_filesystem_device_error",
                    "Whether an error occurred while getting statistics for the given device.",
                    &labels,
                    1.0,
                ),
            }
        }
        Ok(())
    }

    fn uname(&self, out: &mut Collected) -> Result<(), CollectError> {
        let u = rustix::system::uname();
        let s = |c: &std::ffi::CStr| c.to_string_lossy().into_owned();
        let (sysname, release, version, machine, nodename, domain) = (
            s(u.sysname()),
            s(u.release()),
            s(u.version()),
            s(u.machine()),
            s(u.nodename()),
            s(u.domainname()),
        );
        out.gauge(
            "node_uname_info",
            "Labeled system information as provided by the uname system call.",
            &[
                ("domainname", &domain),
                ("machine", &machine),
                ("nodename", &nodename),
                ("release", &release),
                ("sysname", &sysname),
                ("version", &version),
            ],
            1.0,
        );
        Ok(())
    }
}

/// `/proc/mounts` escapes space, tab, newline and backslash as octal.
fn unescape_mount(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> (tempfile::TempDir, HostCollector) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir_all(p.join("net")).unwrap();
        std::fs::write(
            p.join("stat"),
            "cpu  300 10 200 5000 40 0 5 0 0 0\ncpu0 100 5 100 2500 20 0 3 0 7 0\ncpu1 200 5 100 2500 20 0 2 0 0 0\n\
             intr 12345 0 1\nctxt 999\nbtime 1700000000\nprocesses 4242\nprocs_running 3\nprocs_blocked 1\n",
        )
        .unwrap();
        std::fs::write(
            p.join("meminfo"),
            "MemTotal:       24000000 kB\nMemAvailable:   12000000 kB\nActive(anon):      1000 kB\nHugePages_Total:       0\n",
        )
        .unwrap();
        std::fs::write(p.join("loadavg"), "0.50 1.25 2.00 3/105 32234\n").unwrap();
        std::fs::write(
            p.join("net/dev"),
            "Inter-|   Receive                                                |  Transmit\n \
             face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n  \
             eth0: 1000 10 1 2 0 0 0 3 2000 20 0 0 0 0 0 0\n    lo: 50 1 0 0 0 0 0 0 50 1 0 0 0 0 0 0\n",
        )
        .unwrap();
        std::fs::write(
            p.join("diskstats"),
            " 253 0 vda 100 2 800 50 200 3 1600 70 0 120 130 0 0 0 0 4 9\n 253 1 vda1 1 1 1 1 1 1 1 1 0 1 1\n   7 0 loop0 0 0 0 0 0 0 0 0 0 0 0\n",
        )
        .unwrap();
        std::fs::write(
            p.join("mounts"),
            "/dev/vda / ext4 rw,relatime 0 0\nproc /proc proc rw 0 0\n/dev/vdb /mnt/my\\040data ext4 ro 0 0\n",
        )
        .unwrap();
        let c = HostCollector::new(p, false);
        (dir, c)
    }

    #[test]
    fn fixture_values_follow_node_exporter() {
        let (_d, c) = fixture();
        let t = c.ticks_per_second;
        let out = c.collect(1.7e9);
        let v = |n: &str, l: &[(&str, &str)]| {
            out.value(n, l)
                .unwrap_or_else(|| panic!("missing {n} {l:?}"))
        };
        assert_eq!(
            v("node_cpu_seconds_total", &[("cpu", "0"), ("mode", "user")]),
            100.0 / t
        );
        assert_eq!(
            v("node_cpu_seconds_total", &[("cpu", "1"), ("mode", "idle")]),
            2500.0 / t
        );
        assert_eq!(
            v(
                "node_cpu_guest_seconds_total",
                &[("cpu", "0"), ("mode", "user")]
            ),
            7.0 / t
        );
        assert!(
            out.value("node_cpu_seconds_total", &[("cpu", "")])
                .is_none(),
            "the aggregate cpu line is not a cpu"
        );
        assert_eq!(v("node_context_switches_total", &[]), 999.0);
        assert_eq!(v("node_intr_total", &[]), 12345.0);
        assert_eq!(v("node_boot_time_seconds", &[]), 1.7e9);
        assert_eq!(v("node_forks_total", &[]), 4242.0);
        assert_eq!(v("node_procs_blocked", &[]), 1.0);
        assert_eq!(
            v("node_memory_MemAvailable_bytes", &[]),
            12_000_000.0 * 1024.0
        );
        assert_eq!(v("node_memory_Active_anon_bytes", &[]), 1000.0 * 1024.0);
        assert_eq!(v("node_memory_HugePages_Total", &[]), 0.0);
        assert_eq!(v("node_load5", &[]), 1.25);
        assert_eq!(
            v("node_network_receive_bytes_total", &[("device", "eth0")]),
            1000.0
        );
        assert_eq!(
            v(
                "node_network_receive_multicast_total",
                &[("device", "eth0")]
            ),
            3.0
        );
        assert_eq!(
            v("node_network_transmit_packets_total", &[("device", "eth0")]),
            20.0
        );
        assert_eq!(
            v("node_network_transmit_bytes_total", &[("device", "lo")]),
            50.0
        );
        assert_eq!(
            v("node_disk_read_bytes_total", &[("device", "vda")]),
            800.0 * 512.0
        );
        assert_eq!(
            v("node_disk_write_time_seconds_total", &[("device", "vda")]),
            0.07
        );
        assert_eq!(
            v("node_disk_flush_requests_total", &[("device", "vda")]),
            4.0
        );
        assert!(
            out.value("node_disk_reads_completed_total", &[("device", "vda1")])
                .is_none(),
            "partition skipped"
        );
        assert!(
            out.value("node_disk_reads_completed_total", &[("device", "loop0")])
                .is_none(),
            "loop skipped"
        );
        assert_eq!(
            v(
                "node_filesystem_readonly",
                &[("mountpoint", "/mnt/my data"), ("fstype", "ext4")]
            ),
            1.0
        );
        assert_eq!(v("node_filesystem_readonly", &[("mountpoint", "/")]), 0.0);
        assert!(
            out.value("node_filesystem_readonly", &[("mountpoint", "/proc")])
                .is_none()
        );
        for col in [
            "cpu",
            "meminfo",
            "loadavg",
            "netdev",
            "diskstats",
            "filesystem",
            "uname",
        ] {
            assert_eq!(
                v("node_scrape_collector_success", &[("collector", col)]),
                1.0,
                "{col}"
            );
        }
        // metadata recorded once per family, with the right type
        let m = |n: &str| {
            out.metadata
                .iter()
                .filter(|(x, _)| x == n)
                .map(|(_, m)| m.metric_type)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            m("node_cpu_seconds_total"),
            vec![model::MetricType::Counter]
        );
        assert_eq!(m("node_load1"), vec![model::MetricType::Gauge]);
    }

    #[test]
    fn a_broken_file_fails_only_its_collector() {
        let (d, c) = fixture();
        std::fs::write(d.path().join("loadavg"), "garbage\n").unwrap();
        std::fs::remove_file(d.path().join("diskstats")).unwrap();
        let out = c.collect(0.0);
        assert_eq!(
            out.value("node_scrape_collector_success", &[("collector", "loadavg")]),
            Some(0.0)
        );
        assert_eq!(
            out.value(
                "node_scrape_collector_success",
                &[("collector", "diskstats")]
            ),
            Some(0.0)
        );
        assert!(out.value("node_load1", &[]).is_none());
        assert!(out.value("node_memory_MemTotal_bytes", &[]).is_some());
    }

    #[test]
    fn the_real_host_has_the_core_metrics() {
        let out = HostCollector::default().collect(0.0);
        for name in [
            "node_cpu_seconds_total",
            "node_memory_MemAvailable_bytes",
            "node_load1",
            "node_network_receive_bytes_total",
            "node_filesystem_avail_bytes",
            "node_boot_time_seconds",
        ] {
            assert!(
                out.series
                    .iter()
                    .any(|(l, _)| l.metric_name() == Some(name)),
                "{name} missing on this host"
            );
        }
    }
}

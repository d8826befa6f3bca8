//! `flightdeck audit tail|search|export`: reads the audit trail from a data
//! directory (read-only, safe while a server runs) or from a server URL
//! with a token, and prints NDJSON (or CSV for export). `flightdeck audit
//! pubkey` prints the checkpoint verifier key of a data directory; `flightdeck
//! audit verify` checks a log's tlog-tiles files (from a data directory or
//! over HTTP) with `audit::verify`. `flightdeck audit receipt` fetches one
//! entry's receipt (from a data directory or a server) and `flightdeck audit
//! verify-receipt` checks one offline with `audit::verify_receipt`;
//! `flightdeck audit monitor` checks what changed since its last run with
//! `audit::monitor` and, as a witness, cosigns and pushes the checkpoint;
//! `witness-keygen` makes a witness key and `rotate-key` rotates a stopped
//! data directory's signing key (`audit::keys`); `erase` erases a person's
//! personal values; `bundle` writes one log as an auditor's folder
//! (`audit::bundle`) that `verify --dir` checks.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};

#[derive(clap::Subcommand)]
pub enum AuditCommand {
    /// Print matching events, one JSON object per line (newest first unless --order oldest).
    Search(SearchArgs),
    /// Stream every matching event as NDJSON or CSV.
    Export {
        #[command(flatten)]
        args: SearchArgs,
        /// `ndjson` or `csv`.
        #[arg(long, default_value = "ndjson")]
        format: String,
    },
    /// Print the last events, then follow new ones as they are appended.
    Tail {
        #[command(flatten)]
        args: SearchArgs,
        /// Poll interval while following.
        #[arg(long, default_value = "1s")]
        interval: String,
        /// Print the last events and exit instead of following.
        #[arg(long)]
        no_follow: bool,
    },
    /// Print the verifier key of the audit log's signed checkpoints
    /// (`<name>+<hex key id>+<base64 key>`), for tlog and note verifiers.
    Pubkey {
        /// The data directory of the server.
        #[arg(long, env = "FLIGHTDECK_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
    },
    /// Verify an audit transparency log from its public tlog-tiles files:
    /// checkpoint signature and origin, every hash tile against the root,
    /// every entry bundle against the leaves, events in order, and
    /// consistency with a saved checkpoint. Exit 0 when it verifies, 1 at
    /// the first bad place (named).
    Verify(VerifyArgs),
    /// Print the receipt of one audit entry (C2SP tlog-proof text with the
    /// entry bytes, against the latest signed checkpoint), from a data
    /// directory or a server: save it and check it later, anywhere, with
    /// `flightdeck audit verify-receipt`.
    Receipt(ReceiptArgs),
    /// Verify a receipt offline: the checkpoint's signature by --key, its
    /// origin, and the entry's inclusion at its index in the signed tree;
    /// print the entry. Exit 0 when it verifies, 1 with the failing part
    /// named otherwise.
    VerifyReceipt {
        /// The receipt file (`-` for standard input).
        file: PathBuf,
        /// The verifier key (`flightdeck audit pubkey`, or `<base>key`).
        #[arg(long)]
        key: String,
        /// The origin the checkpoint must carry (default: any log of the
        /// key's name, and the one the entry says it belongs to).
        #[arg(long)]
        origin: Option<String>,
    },
    /// Erase a person's personal values (name, address, user agent) from
    /// the audit trail by deleting their keys (crypto-shredding). Events
    /// stay and keep verifying; reads show `[erased]`. Projects under a
    /// legal hold are skipped. Recorded in the organization log.
    Erase(EraseArgs),
    /// Check what changed in a log since the last run (cron-friendly):
    /// checkpoint signature and origin, consistency with the checkpoint in
    /// the state file (a proof from the served tiles), every new entry;
    /// then save the new state. With --witness-key, also cosign the
    /// checkpoint and push the cosignature to the server. Exit 0 with one
    /// summary line, or 1 naming a rollback, fork, bad signature or bad
    /// entry (the state file is then left as it was).
    Monitor(MonitorArgs),
    /// Create a witness key file (mode 0600) and print its verifier key,
    /// for the servers' `audit.witnesses` and verifiers' `--witness`.
    WitnessKeygen {
        /// The witness's name, e.g. witness.example.com/w1 (no spaces or '+').
        #[arg(long)]
        name: String,
        /// Where to write the private key; never overwritten.
        #[arg(long)]
        out: PathBuf,
    },
    /// Replace the audit signing key of a stopped server's data directory
    /// by a new one (the old public key stays listed at `<base>keys`);
    /// the next start re-signs every log's checkpoint. A running server
    /// rotates with `POST /api/flightdeck/v1/audit/log/rotate-key`.
    RotateKey {
        /// The data directory of the (stopped) server.
        #[arg(long, env = "FLIGHTDECK_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
    },
    /// Write an auditor bundle: one log's signed checkpoint, hash tiles and
    /// entry bundles in the tlog-tiles layout (servable by any static web
    /// server), its verifier key (`key`) and a README.md on how to verify
    /// it; then verify the folder. From a data directory (read-only, safe
    /// beside a running server) or a server (--url, --token).
    Bundle(BundleArgs),
}

#[derive(clap::Args, Clone)]
pub struct EraseArgs {
    /// A user name, user id or token id (also erases failed logins that
    /// claimed this name).
    #[arg(long)]
    pub principal: String,
    /// Addresses of the person's anonymous requests to erase too.
    #[arg(long = "source-ip")]
    pub source_ips: Vec<String>,
    /// Work on this data directory (the server must be stopped: it holds
    /// the directory lock). Default when no --url is given.
    #[arg(long, env = "FLIGHTDECK_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Ask a running server instead (token of an organization admin with
    /// the `admin` scope).
    #[arg(long, env = "FLIGHTDECK_URL")]
    pub url: Option<String>,
    #[arg(long, env = "FLIGHTDECK_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(clap::Args, Clone)]
pub struct ReceiptArgs {
    /// Read this data directory (default when no --url is given).
    #[arg(long, env = "FLIGHTDECK_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Ask a server instead, e.g. http://127.0.0.1:9464.
    #[arg(long, env = "FLIGHTDECK_URL")]
    pub url: Option<String>,
    /// API token for --url (scope audit:read).
    #[arg(long, env = "FLIGHTDECK_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The project's log; without it, the organization log.
    #[arg(long)]
    pub project: Option<String>,
    /// The event id.
    #[arg(long, conflicts_with = "index", required_unless_present = "index")]
    pub id: Option<String>,
    /// The entry's log_index.
    #[arg(long)]
    pub index: Option<u64>,
}

/// A witness policy for `verify` and `monitor`.
#[derive(clap::Args, Clone)]
pub struct WitnessPolicyArgs {
    /// A witness verifier key (`<name>+<hex id>+<base64>`, type 0x04)
    /// whose cosignature counts; repeat for several.
    #[arg(long = "witness")]
    pub witness: Vec<String>,
    /// How many of the --witness keys must have cosigned the checkpoint
    /// (or one it extends) [default: all of them].
    #[arg(long)]
    pub witness_quorum: Option<usize>,
}

#[derive(clap::Args, Clone)]
pub struct MonitorArgs {
    /// The server, e.g. http://127.0.0.1:9464.
    #[arg(long, env = "FLIGHTDECK_URL")]
    pub url: Option<String>,
    /// Read a data directory instead of a server (no cosigning).
    #[arg(long, conflicts_with_all = ["url", "witness_key"])]
    pub data_dir: Option<PathBuf>,
    /// API token for --url (audit:read; audit:write too with --witness-key).
    #[arg(long, env = "FLIGHTDECK_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The project's log; without it (or with --org), the organization log.
    #[arg(long, conflicts_with = "org")]
    pub project: Option<String>,
    /// The organization log (the default).
    #[arg(long)]
    pub org: bool,
    /// The log's verifier key; repeat it to also accept older keys after a
    /// key rotation (a state saved under the old key).
    #[arg(long, required = true)]
    pub key: Vec<String>,
    /// The expected origin line (default `<key name>/org` or `<key name>/p/<slug>`).
    #[arg(long)]
    pub origin: Option<String>,
    /// The state file: read if present (else everything is checked from
    /// entry 0), replaced atomically after a successful run.
    #[arg(long)]
    pub state: PathBuf,
    /// Act as a witness: cosign the verified checkpoint with this key file
    /// (`flightdeck audit witness-keygen`) and push the cosignature.
    #[arg(long)]
    pub witness_key: Option<PathBuf>,
    #[command(flatten)]
    pub policy: WitnessPolicyArgs,
}

#[derive(clap::Args, Clone)]
#[command(group(clap::ArgGroup::new("which_log").required(true).args(["project", "org"])))]
pub struct BundleArgs {
    /// Read this data directory (default when no --url is given).
    #[arg(long, env = "FLIGHTDECK_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Read from a server instead, e.g. http://127.0.0.1:9464.
    #[arg(long, env = "FLIGHTDECK_URL")]
    pub url: Option<String>,
    /// API token for --url (scope audit:read; an org admin token for --org).
    #[arg(long, env = "FLIGHTDECK_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The project's log.
    #[arg(long)]
    pub project: Option<String>,
    /// The organization log.
    #[arg(long)]
    pub org: bool,
    /// The folder to write; it must not exist or be empty.
    #[arg(long)]
    pub out: PathBuf,
    /// The verifier key to check the bundle with (and to write as `key`).
    /// Without it, the source's own key is used (the data directory's
    /// signing key, or the server's `key`), which checks consistency only.
    #[arg(long)]
    pub key: Option<String>,
}

#[derive(clap::Args, Clone)]
pub struct VerifyArgs {
    /// Read this data directory (default when no --url is given).
    #[arg(long, env = "FLIGHTDECK_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Read from a server instead, e.g. http://127.0.0.1:9464 (needs --key).
    #[arg(long, env = "FLIGHTDECK_URL")]
    pub url: Option<String>,
    /// Read an auditor bundle folder (`flightdeck audit bundle`) or any
    /// folder laid out as a tlog-tiles log instead. Without --project or
    /// --org, the log is the one the signed checkpoint's origin names.
    #[arg(long, conflicts_with_all = ["url", "all"])]
    pub dir: Option<PathBuf>,
    /// API token for --url (scope audit:read).
    #[arg(long, env = "FLIGHTDECK_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The project's log; without it (or with --org), the organization log.
    #[arg(long, conflicts_with_all = ["org", "all"])]
    pub project: Option<String>,
    /// The organization log (the default).
    #[arg(long, conflicts_with = "all")]
    pub org: bool,
    /// Every log found in the data directory (organization and projects).
    #[arg(long, conflicts_with_all = ["url", "since_checkpoint"])]
    pub all: bool,
    /// The verifier key (`flightdeck audit pubkey`); repeat it to also
    /// accept older keys after a key rotation. Without it, the keys of the
    /// data directory are used, which trusts the data directory.
    #[arg(long)]
    pub key: Vec<String>,
    /// The expected origin line (default `<key name>/org` or `<key name>/p/<slug>`).
    #[arg(long)]
    pub origin: Option<String>,
    /// A previously saved checkpoint file of the same log: the current one
    /// must extend it (a rollback or fork is reported).
    #[arg(long)]
    pub since_checkpoint: Option<PathBuf>,
    #[command(flatten)]
    pub policy: WitnessPolicyArgs,
}

#[derive(clap::Args, Clone)]
pub struct SearchArgs {
    /// Read this data directory (default when no --url is given).
    #[arg(long, env = "FLIGHTDECK_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Read from a server instead, e.g. http://127.0.0.1:9464.
    #[arg(long, env = "FLIGHTDECK_URL")]
    pub url: Option<String>,
    /// API token for --url.
    #[arg(long, env = "FLIGHTDECK_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Project slug; without it, organization-level events.
    #[arg(long)]
    pub project: Option<String>,
    #[arg(long)]
    pub principal_id: Option<String>,
    /// user, token, system or anonymous.
    #[arg(long)]
    pub principal_type: Option<String>,
    #[arg(long)]
    pub action: Option<String>,
    #[arg(long)]
    pub action_prefix: Option<String>,
    #[arg(long)]
    pub resource_type: Option<String>,
    #[arg(long)]
    pub resource_id: Option<String>,
    /// success or failure.
    #[arg(long)]
    pub result: Option<String>,
    #[arg(long)]
    pub source_ip: Option<String>,
    /// RFC 3339 start time (inclusive).
    #[arg(long)]
    pub from: Option<String>,
    /// RFC 3339 end time (exclusive).
    #[arg(long)]
    pub to: Option<String>,
    /// Case-insensitive text anywhere in the event.
    #[arg(long)]
    pub q: Option<String>,
    /// newest or oldest.
    #[arg(long, default_value = "newest")]
    pub order: String,
    /// At most this many events (search and tail).
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
}

impl SearchArgs {
    /// The filters as URL query pairs (the server's parameter names).
    fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut v = Vec::new();
        let mut add = |k: &'static str, o: &Option<String>| {
            if let Some(x) = o {
                v.push((k, x.clone()));
            }
        };
        add("principal_id", &self.principal_id);
        add("principal_type", &self.principal_type);
        add("action", &self.action);
        add("action_prefix", &self.action_prefix);
        add("resource_type", &self.resource_type);
        add("resource_id", &self.resource_id);
        add("result", &self.result);
        add("source_ip", &self.source_ip);
        add("from", &self.from);
        add("to", &self.to);
        add("q", &self.q);
        v
    }

    fn query(&self) -> anyhow::Result<audit::Query> {
        let time = |name: &str, v: &Option<String>| -> anyhow::Result<Option<i64>> {
            v.as_ref()
                .map(|t| {
                    audit::parse_time_ns(t)
                        .with_context(|| format!("--{name}: '{t}' is not an RFC 3339 time"))
                })
                .transpose()
        };
        Ok(audit::Query {
            log: Some(audit::LogKey::of(self.project.as_deref())),
            principal_id: self.principal_id.clone(),
            principal_type: match self.principal_type.as_deref() {
                None => None,
                Some("user") => Some(audit::PrincipalKind::User),
                Some("token") => Some(audit::PrincipalKind::Token),
                Some("system") => Some(audit::PrincipalKind::System),
                Some("anonymous") => Some(audit::PrincipalKind::Anonymous),
                Some(o) => bail!("--principal-type: '{o}' is not user, token, system or anonymous"),
            },
            action: self.action.clone(),
            action_prefix: self.action_prefix.clone(),
            resource_type: self.resource_type.clone(),
            resource_id: self.resource_id.clone(),
            status: match self.result.as_deref() {
                None => None,
                Some("success") => Some(audit::Status::Success),
                Some("failure") => Some(audit::Status::Failure),
                Some(o) => bail!("--result: '{o}' is not success or failure"),
            },
            source_ip: self.source_ip.clone(),
            from_ns: time("from", &self.from)?,
            to_ns: time("to", &self.to)?,
            text: self.q.clone(),
            order: self.order()?,
            cursor: None,
            limit: self.limit.clamp(1, 1000),
        })
    }

    fn order(&self) -> anyhow::Result<audit::Order> {
        match self.order.as_str() {
            "newest" => Ok(audit::Order::NewestFirst),
            "oldest" => Ok(audit::Order::OldestFirst),
            o => bail!("--order: '{o}' is not newest or oldest"),
        }
    }

    fn base(&self, url: &str, what: &str) -> String {
        let url = url.trim_end_matches('/');
        match &self.project {
            Some(p) => format!("{url}/api/flightdeck/v1/projects/{p}/audit/{what}"),
            None => format!("{url}/api/flightdeck/v1/audit/{what}"),
        }
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(300)))
        .build()
        .into()
}

fn get(
    args: &SearchArgs,
    url: &str,
    what: &str,
    extra: &[(&str, String)],
) -> anyhow::Result<ureq::http::Response<ureq::Body>> {
    let Some(token) = &args.token else {
        bail!("--url needs --token (or FLIGHTDECK_TOKEN)");
    };
    let mut req = agent()
        .get(args.base(url, what))
        .header("Authorization", format!("Bearer {token}"));
    for (k, v) in args.pairs().iter().chain(extra.iter()) {
        req = req.query(*k, v);
    }
    let resp = req.call().context("request failed")?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body = resp.into_body().read_to_string().unwrap_or_default();
        bail!("server answered {status}: {body}");
    }
    Ok(resp)
}

/// One page from a server: events and the next cursor.
fn remote_page(
    args: &SearchArgs,
    url: &str,
    order: &str,
    cursor: Option<&str>,
    limit: usize,
) -> anyhow::Result<(Vec<serde_json::Value>, Option<String>)> {
    let mut extra = vec![("order", order.to_string()), ("limit", limit.to_string())];
    if let Some(c) = cursor {
        extra.push(("cursor", c.to_string()));
    }
    let resp = get(args, url, "events", &extra)?;
    let v: serde_json::Value = serde_json::from_reader(resp.into_body().into_reader())
        .context("the server's answer is not JSON")?;
    let events = v["events"].as_array().cloned().unwrap_or_default();
    let next = v["next_cursor"].as_str().map(str::to_string);
    Ok((events, next))
}

fn print_event(out: &mut impl Write, e: &audit::Event) -> anyhow::Result<()> {
    out.write_all(&e.canonical_bytes())?;
    out.write_all(b"\n")?;
    Ok(())
}

pub fn run(cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match cmd {
        AuditCommand::Pubkey { data_dir } => {
            let dir = data_dir.join("audit");
            let key = audit::tlog::read_verifier_key(&dir)
                .with_context(|| format!("cannot read the signing key in {}", dir.display()))?;
            match key {
                Some(k) => writeln!(out, "{k}")?,
                None => bail!(
                    "{} has no audit signing key yet: start the server on it once (is --data-dir right?)",
                    data_dir.display()
                ),
            }
        }
        AuditCommand::Verify(args) => {
            out.flush()?;
            drop(out);
            return verify(&args);
        }
        AuditCommand::Erase(args) => {
            let report = erase(&args)?;
            writeln!(out, "{report}")?;
        }
        AuditCommand::Receipt(args) => {
            let r = receipt(&args)?;
            out.write_all(&r)?;
        }
        AuditCommand::VerifyReceipt { file, key, origin } => {
            out.flush()?;
            drop(out);
            return verify_receipt(&file, &key, origin.as_deref());
        }
        AuditCommand::Monitor(args) => {
            out.flush()?;
            drop(out);
            return monitor(&args);
        }
        AuditCommand::WitnessKeygen { name, out: path } => {
            let vkey = audit::keys::create_witness_key(&path, &name)
                .with_context(|| format!("cannot create the witness key {}", path.display()))?;
            writeln!(out, "{vkey}")?;
        }
        AuditCommand::RotateKey { data_dir } => {
            let dir = data_dir.join("audit");
            let rec = match audit::keys::rotate_offline(&dir, crate::now_ns()) {
                Err(audit::AuditError::Locked { .. }) => bail!(
                    "{} is in use by a running server: stop it first, or rotate with POST /api/flightdeck/v1/audit/log/rotate-key",
                    data_dir.display()
                ),
                r => r.with_context(|| {
                    format!("cannot rotate the signing key in {}", dir.display())
                })?,
            };
            writeln!(out, "{}", rec.vkey)?;
        }
        AuditCommand::Bundle(args) => {
            out.flush()?;
            drop(out);
            return bundle(&args);
        }
        AuditCommand::Search(args) => {
            if let Some(url) = args.url.clone() {
                let (events, _) =
                    remote_page(&args, &url, &args.order, None, args.limit.clamp(1, 1000))?;
                for e in events {
                    writeln!(out, "{e}")?;
                }
            } else {
                let log = open(&args)?;
                for e in log.search(&args.query()?)?.events {
                    print_event(&mut out, &e)?;
                }
            }
        }
        AuditCommand::Export { args, format } => {
            if format != "ndjson" && format != "csv" {
                bail!("--format: '{format}' is not ndjson or csv");
            }
            if let Some(url) = args.url.clone() {
                let mut extra = vec![("format", format.clone())];
                if args.order != "newest" {
                    extra.push(("order", args.order.clone()));
                }
                let resp = get(&args, &url, "export", &extra)?;
                std::io::copy(&mut resp.into_body().into_reader(), &mut out)?;
            } else {
                if format == "csv" {
                    bail!(
                        "CSV export reads through a server (--url); from a data directory use NDJSON"
                    );
                }
                let log = open(&args)?;
                for e in log.export(args.query()?) {
                    print_event(&mut out, &e?)?;
                }
            }
        }
        AuditCommand::Tail {
            args,
            interval,
            no_follow,
        } => {
            let every = crate::config::parse_duration(&interval)
                .with_context(|| format!("--interval: '{interval}' is not a duration"))?;
            tail(&args, every, no_follow, &mut out)?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn open(args: &SearchArgs) -> anyhow::Result<audit::AuditLog> {
    let dir = args.data_dir.join("audit");
    if !dir.is_dir() {
        bail!(
            "{} holds no audit log (is --data-dir right?)",
            args.data_dir.display()
        );
    }
    audit::AuditLog::open_read_only(&dir)
        .with_context(|| format!("cannot read the audit log in {}", dir.display()))
}

/// Last `limit` events oldest-first, then new ones as they come.
fn tail(
    args: &SearchArgs,
    every: Duration,
    no_follow: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let limit = args.limit.clamp(1, 1000);
    if let Some(url) = args.url.clone() {
        let (mut last, _) = remote_page(args, &url, "newest", None, limit)?;
        last.reverse();
        let mut seen = last.last().and_then(|e| e["seq"].as_u64()).unwrap_or(0);
        for e in &last {
            writeln!(out, "{e}")?;
        }
        out.flush()?;
        if no_follow {
            return Ok(());
        }
        loop {
            std::thread::sleep(every);
            let (newer, _) = remote_page(args, &url, "newest", None, 1000)?;
            let floor = seen;
            for e in newer
                .iter()
                .rev()
                .filter(|e| e["seq"].as_u64().unwrap_or(0) > floor)
            {
                writeln!(out, "{e}")?;
                seen = seen.max(e["seq"].as_u64().unwrap_or(0));
            }
            out.flush()?;
        }
    }
    let mut seen = 0u64;
    let mut first = true;
    loop {
        let log = open(args)?;
        let mut q = args.query()?;
        q.order = audit::Order::NewestFirst;
        q.limit = if first { limit } else { 1000 };
        let mut events = log.search(&q)?.events;
        events.reverse();
        let floor = seen;
        for e in events.iter().filter(|e| e.seq > floor) {
            print_event(out, e)?;
            seen = seen.max(e.seq);
        }
        out.flush()?;
        first = false;
        if no_follow {
            return Ok(());
        }
        std::thread::sleep(every);
    }
}

/// Reads one relative path of a log (a directory or a server).
type Fetcher = Box<dyn FnMut(&str) -> audit::verify::Fetched>;

/// The base URL of a log's public files: `<url>/api/flightdeck/v1/projects/<p>/audit/log/`
/// or the organization's.
fn log_base(url: &str, project: Option<&str>) -> String {
    let url = url.trim_end_matches('/');
    match project {
        Some(p) => format!("{url}/api/flightdeck/v1/projects/{p}/audit/log/"),
        None => format!("{url}/api/flightdeck/v1/audit/log/"),
    }
}

/// A fetch function over HTTP: 200 is the file, 404 is "absent", anything
/// else stops the verification.
fn http_fetcher(base: String, token: String) -> Fetcher {
    let agent = agent();
    Box::new(move |rel: &str| -> audit::verify::Fetched {
        let resp = agent
            .get(format!("{base}{rel}"))
            .header("Authorization", format!("Bearer {token}"))
            .call()
            .map_err(|e| format!("request failed: {e}"))?;
        match resp.status().as_u16() {
            200 => resp
                .into_body()
                .with_config()
                .limit(16 << 20)
                .read_to_vec()
                .map(Some)
                .map_err(|e| format!("reading the answer: {e}")),
            404 => Ok(None),
            s => Err(format!("server answered {s}")),
        }
    })
}

/// The log verifier keys of `--key`; without any, the keys of the data
/// directory (with a note that this trusts it), refused for a server.
fn log_keys(
    given: &[String],
    url: Option<&str>,
    data_dir: &Path,
    out: &mut impl Write,
) -> anyhow::Result<Vec<merkle::VerifierKey>> {
    if !given.is_empty() {
        return given
            .iter()
            .map(|k| {
                merkle::VerifierKey::parse(k)
                    .with_context(|| format!("--key: '{k}' is not a verifier key"))
            })
            .collect();
    }
    if url.is_some() {
        bail!("--url needs --key (the verifier key printed by `flightdeck audit pubkey`)");
    }
    let dir = data_dir.join("audit");
    let keys: Vec<merkle::VerifierKey> = audit::keys::read_public(&dir)
        .with_context(|| format!("cannot read the signing keys in {}", dir.display()))?
        .into_iter()
        .map(|r| r.vkey)
        .collect();
    if keys.is_empty() {
        bail!(
            "{} has no audit signing key (is --data-dir right?)",
            data_dir.display()
        );
    }
    writeln!(
        out,
        "note: no --key given: using the signing keys of {}, which trusts the data directory",
        dir.display()
    )?;
    Ok(keys)
}

/// The witness keys and quorum of `--witness` / `--witness-quorum`.
fn witness_policy(
    p: &WitnessPolicyArgs,
) -> anyhow::Result<(Vec<merkle::CosignatureVerifier>, usize)> {
    let keys = p
        .witness
        .iter()
        .map(|k| {
            merkle::CosignatureVerifier::parse(k)
                .with_context(|| format!("--witness: '{k}' is not a witness verifier key"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let quorum = p.witness_quorum.unwrap_or(keys.len());
    if quorum > keys.len() {
        bail!(
            "--witness-quorum {quorum} is more than the {} --witness keys given",
            keys.len()
        );
    }
    if p.witness_quorum == Some(0) && !keys.is_empty() {
        bail!("--witness-quorum 0 would check nothing: give at least 1");
    }
    Ok((keys, quorum))
}

/// `flightdeck audit verify`: exit 0 when every selected log verifies.
fn verify(args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let keys = match (&args.dir, args.key.is_empty()) {
        (Some(dir), true) => {
            let path = dir.join(audit::files::BUNDLE_KEY);
            let k = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "no --key given and {} cannot be read (pass --key)",
                    path.display()
                )
            })?;
            writeln!(
                out,
                "note: no --key given: using {}, which trusts the bundle",
                path.display()
            )?;
            vec![
                merkle::VerifierKey::parse(k.trim())
                    .with_context(|| format!("{}: not a verifier key", path.display()))?,
            ]
        }
        _ => log_keys(&args.key, args.url.as_deref(), &args.data_dir, &mut out)?,
    };
    let (witnesses, quorum) = witness_policy(&args.policy)?;
    let since = match &args.since_checkpoint {
        Some(p) => Some(
            std::fs::read(p)
                .with_context(|| format!("--since-checkpoint: cannot read {}", p.display()))?,
        ),
        None => None,
    };
    let mut log = audit::LogKey::of(args.project.as_deref());
    let mut logs: Vec<(String, Fetcher)> = Vec::new();
    if let Some(url) = &args.url {
        let Some(token) = args.token.clone() else {
            bail!("--url needs --token (or FLIGHTDECK_TOKEN)");
        };
        let base = log_base(url, args.project.as_deref());
        logs.push((audit::files::tlog_log_dir(&log), http_fetcher(base, token)));
    } else if let Some(dir) = &args.dir {
        if args.project.is_none() && !args.org {
            log = bundle_log(dir, &keys[0])?;
        }
        logs.push((
            audit::files::tlog_log_dir(&log),
            Box::new(audit::verify::dir_fetcher(dir.clone())),
        ));
    } else {
        let tlog = args.data_dir.join("audit").join(audit::files::TLOG_DIR);
        if args.all {
            for (name, dir) in audit::verify::log_dirs(&tlog)
                .with_context(|| format!("cannot list {}", tlog.display()))?
            {
                logs.push((name, Box::new(audit::verify::dir_fetcher(dir))));
            }
            if logs.is_empty() {
                bail!("{} holds no audit log with a checkpoint", tlog.display());
            }
        } else {
            let name = audit::files::tlog_log_dir(&log);
            let dir = tlog.join(&name);
            if !dir.is_dir() {
                bail!(
                    "{} does not exist (is --data-dir right? a log without events has no files)",
                    dir.display()
                );
            }
            logs.push((name, Box::new(audit::verify::dir_fetcher(dir))));
        }
    }
    let mut failed = false;
    for (name, fetch) in logs {
        let mut expect = audit::verify::Expect::new(
            keys.clone(),
            match &args.origin {
                Some(o) if !args.all => o.clone(),
                _ => format!("{}/{name}", keys[0].name()),
            },
            audit::verify::log_of_dir(&name),
        );
        expect.since = since.clone();
        expect.witnesses = witnesses.clone();
        expect.quorum = quorum;
        match audit::verify::verify(fetch, &expect) {
            Ok(report) => writeln!(out, "{report}")?,
            Err(f) => {
                writeln!(out, "FAIL: {}: {f}", expect.origin)?;
                failed = true;
            }
        }
    }
    // On a data directory, the private copies must agree with the signed
    // trees too: segments, search index, sealed personal values.
    if args.url.is_none() && args.dir.is_none() && !failed {
        match audit::fsck::check_store(&args.data_dir.join("audit")) {
            Ok(r) => writeln!(
                out,
                "OK store: {} events, {} leaves match the signed trees, {} index rows, {} sealed envelopes ({} erased)",
                r.events,
                r.leaves_checked,
                r.index_rows,
                r.envelopes_opened + r.envelopes_erased,
                r.envelopes_erased
            )?,
            Err(f) => {
                writeln!(out, "FAIL: store: {f}")?;
                failed = true;
            }
        }
    }
    out.flush()?;
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `flightdeck audit receipt`: the receipt's bytes.
fn receipt(args: &ReceiptArgs) -> anyhow::Result<Vec<u8>> {
    let entry = match (&args.id, args.index) {
        (Some(id), _) => audit::EntryRef::Id(id.clone()),
        (None, Some(i)) => audit::EntryRef::Index(i),
        (None, None) => bail!("give --id or --index"),
    };
    if let Some(url) = &args.url {
        let Some(token) = &args.token else {
            bail!("--url needs --token (or FLIGHTDECK_TOKEN)");
        };
        let url = url.trim_end_matches('/');
        let which = match &entry {
            audit::EntryRef::Id(id) => id.clone(),
            audit::EntryRef::Index(i) => i.to_string(),
        };
        if which.contains(['/', '?', '#', '%']) {
            bail!("--id: '{which}' is not an event id");
        }
        let target = match &args.project {
            Some(p) => format!("{url}/api/flightdeck/v1/projects/{p}/audit/receipts/{which}"),
            None => format!("{url}/api/flightdeck/v1/audit/receipts/{which}"),
        };
        let resp = agent()
            .get(&target)
            .header("Authorization", format!("Bearer {token}"))
            .call()
            .context("request failed")?;
        let status = resp.status();
        let body = resp
            .into_body()
            .with_config()
            .limit(4 << 20)
            .read_to_vec()
            .context("reading the answer")?;
        if !status.is_success() {
            bail!(
                "server answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        return Ok(body);
    }
    let dir = args.data_dir.join("audit");
    if !dir.is_dir() {
        bail!(
            "{} holds no audit log (is --data-dir right?)",
            args.data_dir.display()
        );
    }
    let log = audit::AuditLog::open_read_only(&dir)
        .with_context(|| format!("cannot read the audit log in {}", dir.display()))?;
    let r = log.receipt(&audit::LogKey::of(args.project.as_deref()), &entry)?;
    Ok(r.to_bytes())
}

/// `flightdeck audit verify-receipt`: exit 0 when the receipt verifies.
fn verify_receipt(file: &Path, key: &str, origin: Option<&str>) -> anyhow::Result<ExitCode> {
    let key = merkle::VerifierKey::parse(key)
        .with_context(|| format!("--key: '{key}' is not a verifier key"))?;
    let bytes = if file == Path::new("-") {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut b)
            .context("reading the receipt from standard input")?;
        b
    } else {
        std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match audit::verify_receipt(&bytes, &key, origin) {
        Ok(v) => {
            writeln!(out, "{v}")?;
            // The entry as stored: the event's canonical JSON.
            writeln!(out, "{}", String::from_utf8_lossy(&v.entry))?;
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            writeln!(out, "FAIL: {}: {e}", file.display())?;
            out.flush()?;
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `flightdeck audit erase`: over HTTP, or on a stopped server's data
/// directory (recorded as the `system` principal, source `flightdeck.cli`).
fn erase(args: &EraseArgs) -> anyhow::Result<serde_json::Value> {
    if let Some(url) = &args.url {
        let Some(token) = &args.token else {
            bail!("--url needs --token (or FLIGHTDECK_TOKEN)");
        };
        let resp = agent()
            .post(format!(
                "{}/api/flightdeck/v1/audit/erasures",
                url.trim_end_matches('/')
            ))
            .header("Authorization", format!("Bearer {token}"))
            .send_json(serde_json::json!({
                "principal": args.principal,
                "source_ips": args.source_ips,
            }))
            .context("request failed")?;
        let status = resp.status();
        let body = resp.into_body().read_to_string().unwrap_or_default();
        if !status.is_success() {
            bail!("server answered {status}: {body}");
        }
        return serde_json::from_str(&body).context("the server's answer is not JSON");
    }
    for ip in &args.source_ips {
        if ip.parse::<std::net::IpAddr>().is_err() {
            bail!("--source-ip: '{ip}' is not an IP address");
        }
    }
    let (meta, log) = crate::open_stores(&args.data_dir, audit::Options::default())?;
    let organization = meta
        .read(|tx| tx.organization())?
        .map(|o| o.name)
        .unwrap_or_default();
    let held = meta.read(|tx| tx.held_projects())?;
    let user_id = match meta.read(|tx| tx.user(&args.principal)) {
        Ok(u) => Some(u.id),
        Err(meta::MetaError::NotFound { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    use sha2::Digest;
    let person = hex::encode(sha2::Sha256::digest(args.principal.as_bytes()));
    let mut d = server::bootstrap::system_draft(
        &organization,
        None,
        "audit.person.erase",
        audit::Resource {
            kind: "person".into(),
            id: Some(format!("sha256:{person}")),
            name: None,
        },
    );
    d.event_source = "flightdeck.cli".into();
    d.request_parameters = Some(serde_json::json!({
        "principal_sha256": person,
        "source_ips": args.source_ips.len(),
    }));
    // Recorded first: an erasure is never unaudited.
    log.append(d)
        .context("cannot record the erasure in the audit log")?;
    let held_logs: Vec<audit::LogKey> = held.into_iter().map(audit::LogKey::Project).collect();
    let mut r = log.erase(&args.principal, &args.source_ips, &held_logs)?;
    if let Some(id) = user_id {
        let more = log.erase(&id, &[], &held_logs)?;
        r.keys += more.keys;
        r.logs.extend(more.logs);
        r.held.extend(more.held);
    }
    log.shutdown();
    let name = |l: &String| l.strip_prefix("p:").unwrap_or("org").to_string();
    let mut logs: Vec<String> = r.logs.iter().map(name).collect();
    let mut held: Vec<String> = r.held.iter().map(name).collect();
    logs.sort();
    logs.dedup();
    held.sort();
    held.dedup();
    Ok(serde_json::json!({"keys_deleted": r.keys, "logs": logs, "held": held}))
}

/// `flightdeck audit monitor`: exit 0 with one line when the log extends
/// the saved state (and, as a witness, the cosignature was accepted).
fn monitor(args: &MonitorArgs) -> anyhow::Result<ExitCode> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let keys = log_keys(&args.key, None, Path::new("."), &mut out)?;
    let (witnesses, quorum) = witness_policy(&args.policy)?;
    let signer = match &args.witness_key {
        Some(p) => Some(
            audit::keys::read_witness_key(p)
                .with_context(|| format!("--witness-key: cannot use {}", p.display()))?,
        ),
        None => None,
    };
    let log = audit::LogKey::of(args.project.as_deref());
    let name = audit::files::tlog_log_dir(&log);
    let (fetch, push): (Fetcher, Option<(String, String)>) = match (&args.url, &args.data_dir) {
        (Some(url), _) => {
            let Some(token) = args.token.clone() else {
                bail!("--url needs --token (or FLIGHTDECK_TOKEN)");
            };
            let base = log_base(url, args.project.as_deref());
            (
                http_fetcher(base.clone(), token.clone()),
                Some((base, token)),
            )
        }
        (None, Some(d)) => {
            let dir = d.join("audit").join(audit::files::TLOG_DIR).join(&name);
            (Box::new(audit::verify::dir_fetcher(dir)), None)
        }
        (None, None) => bail!("give --url (a server) or --data-dir"),
    };
    let mut expect = audit::verify::Expect::new(
        keys.clone(),
        args.origin
            .clone()
            .unwrap_or_else(|| format!("{}/{name}", keys[0].name())),
        Some(log),
    );
    expect.witnesses = witnesses;
    expect.quorum = quorum;
    let state = audit::monitor::State::load(&args.state)?;
    let (report, new_state) = match audit::monitor::monitor(fetch, &expect, state.as_ref()) {
        Ok(r) => r,
        Err(f) => {
            writeln!(out, "FAIL: {}: {f}", expect.origin)?;
            out.flush()?;
            return Ok(ExitCode::FAILURE);
        }
    };
    new_state
        .save(&args.state)
        .with_context(|| format!("cannot save the state file {}", args.state.display()))?;
    let mut line = report.to_string();
    if let (Some(signer), Some((base, token))) = (&signer, &push) {
        match push_cosignature(signer, &new_state.checkpoint, base, token) {
            Ok(n) => line.push_str(&format!(
                "; cosigned as {} ({n} cosignatures on size {})",
                signer.name(),
                new_state.size
            )),
            Err(e) => {
                writeln!(
                    out,
                    "FAIL: {}: verified (state saved), but the cosignature was not accepted: {e:#}",
                    expect.origin
                )?;
                out.flush()?;
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Cosigns the verified checkpoint note (its text) and pushes the note
/// with the log's signature and this cosignature to `<base>cosignature`;
/// returns how many cosignatures the checkpoint has now.
fn push_cosignature(
    signer: &merkle::CosignatureSigner,
    checkpoint: &str,
    base: &str,
    token: &str,
) -> anyhow::Result<usize> {
    let served = merkle::Note::parse(checkpoint.as_bytes())?;
    let mut note = merkle::Note::new(served.text())?;
    for s in served.signatures() {
        // The log's own lines (not other witnesses', which are theirs to push).
        if merkle::cosignature::cosignature_timestamp(s).is_none() {
            note.add_signature(s.clone())?;
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    note.add_signature(signer.cosign(served.text(), now)?)?;
    let resp = agent()
        .post(format!("{base}cosignature"))
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", "text/plain; charset=utf-8")
        .send(note.to_bytes())
        .context("request failed")?;
    let status = resp.status();
    let body = resp
        .into_body()
        .with_config()
        .limit(1 << 20)
        .read_to_string()
        .unwrap_or_default();
    if !status.is_success() {
        bail!("server answered {status}: {}", body.trim());
    }
    let v: serde_json::Value =
        serde_json::from_str(&body).context("the server's answer is not JSON")?;
    Ok(v["cosignatures"].as_array().map_or(0, Vec::len))
}

/// The log a tlog-tiles folder holds, from its checkpoint's origin line
/// (`<key name>/org` or `<key name>/p/<slug>`). The origin is not trusted
/// here: verification checks the signature over it, and prints it.
fn bundle_log(dir: &std::path::Path, key: &merkle::VerifierKey) -> anyhow::Result<audit::LogKey> {
    let path = dir.join(audit::files::CHECKPOINT);
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let origin = merkle::Note::parse(&bytes)
        .ok()
        .and_then(|n| merkle::Checkpoint::parse(n.text()).ok())
        .map(|c| c.origin().to_string())
        .with_context(|| format!("{} is not a signed tlog checkpoint", path.display()))?;
    origin
        .strip_prefix(&format!("{}/", key.name()))
        .and_then(audit::verify::log_of_dir)
        .with_context(|| {
            format!(
                "{}: origin {origin:?} is not a log of key {:?}; pass --project or --org (and --origin)",
                path.display(),
                key.name()
            )
        })
}

/// `flightdeck audit bundle`: exit 0 when the written folder verifies.
fn bundle(args: &BundleArgs) -> anyhow::Result<ExitCode> {
    let log = audit::LogKey::of(args.project.as_deref());
    let name = audit::files::tlog_log_dir(&log);
    let (mut fetch, source_key): (Fetcher, Option<String>) = match &args.url {
        Some(url) => {
            let Some(token) = args.token.clone() else {
                bail!("--url needs --token (or FLIGHTDECK_TOKEN)");
            };
            let mut fetch = http_fetcher(log_base(url, args.project.as_deref()), token);
            let key = match &args.key {
                Some(_) => None,
                None => fetch(audit::files::BUNDLE_KEY)
                    .map_err(|e| anyhow::anyhow!("cannot read the server's key: {e}"))?
                    .map(|b| String::from_utf8_lossy(&b).trim().to_string()),
            };
            (fetch, key)
        }
        None => {
            let audit_dir = args.data_dir.join("audit");
            let dir = audit_dir.join(audit::files::TLOG_DIR).join(&name);
            if !dir.join(audit::files::CHECKPOINT).is_file() {
                bail!(
                    "{} holds no checkpoint (is --data-dir right? a log without events has none)",
                    dir.display()
                );
            }
            // With --key, the signing key file (mode 0600) is not read at
            // all: an auditor may copy a directory it cannot sign for.
            let key = match &args.key {
                Some(_) => None,
                None => audit::tlog::read_verifier_key(&audit_dir).with_context(|| {
                    format!(
                        "cannot read the signing key in {} (or pass --key)",
                        audit_dir.display()
                    )
                })?,
            };
            (Box::new(audit::verify::dir_fetcher(dir)), key)
        }
    };
    let trusted = args.key.is_some();
    let key_text = args
        .key
        .clone()
        .or(source_key)
        .context("the source has no verifier key: pass --key")?;
    let key = merkle::VerifierKey::parse(key_text.trim())
        .with_context(|| format!("'{key_text}' is not a verifier key"))?;
    let origin = format!("{}/{name}", key.name());
    let readme = bundle_readme(&origin, &log);
    let written = audit::bundle::write_bundle(&mut fetch, &args.out, key_text.trim(), &readme)?;
    let expect = audit::verify::Expect::new(vec![key], origin, Some(log));
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    writeln!(
        out,
        "wrote {}: {} entries, {} tiles and bundles, {} bytes",
        args.out.display(),
        written.size,
        written.tiles,
        written.bytes
    )?;
    let code = match audit::verify::verify(audit::verify::dir_fetcher(args.out.clone()), &expect) {
        Ok(report) => {
            writeln!(out, "{report}")?;
            if !trusted {
                writeln!(
                    out,
                    "note: checked with the source's own key ({}): compare it with a copy you trust",
                    audit::files::BUNDLE_KEY
                )?;
            }
            ExitCode::SUCCESS
        }
        Err(f) => {
            writeln!(out, "FAIL: {}: {f}", expect.origin)?;
            ExitCode::FAILURE
        }
    };
    out.flush()?;
    Ok(code)
}

/// The bundle's README.md: what is in it and how to verify it.
fn bundle_readme(origin: &str, log: &audit::LogKey) -> String {
    let which = match log {
        audit::LogKey::Organization => "--org".to_string(),
        audit::LogKey::Project(p) => format!("--project {p}"),
    };
    format!(
        r#"# Flightdeck audit log bundle: `{origin}`

This folder is one Flightdeck audit log as a [C2SP tlog-tiles](https://c2sp.org/tlog-tiles)
transparency log: an RFC 6962 Merkle tree over the log's events (each entry is one event's
RFC 8785 canonical JSON, in `log_index` order), with a signed
[checkpoint](https://c2sp.org/tlog-checkpoint).

| file | what |
| --- | --- |
| `checkpoint` | the signed checkpoint ([signed note](https://c2sp.org/signed-note), Ed25519): origin `{origin}`, tree size, root hash |
| `tile/<L>/<N>[.p/<W>]` | hash tiles (256 hashes of 32 bytes; `.p/<W>`: the partial rightmost tile of width W) |
| `tile/entries/<N>[.p/<W>]` | entry bundles: each entry is a big-endian u16 length, then the event's JSON bytes |
| `key` | the verifier key (`<name>+<key id>+<base64 key>`) of the server that wrote it |

The folder is a complete log for the checkpoint's size: any static web server makes it a
tlog-tiles log whose base URL is the folder (e.g. `python3 -m http.server` inside it).

**Trust.** `key` came with the bundle: whoever could alter the bundle could replace it.
Verify with a copy of the key obtained separately (the operator's
`flightdeck audit pubkey --data-dir DATA`, or a published copy).

## With Flightdeck

```sh
flightdeck audit verify --dir BUNDLE {which} --key "<verifier key you trust>"
```

It checks the checkpoint's signature and origin, every hash tile against the signed root,
every entry against the tiles, and that each entry is an audit event of this log whose
`log_index` is its position (`seq` strictly increasing, `time` non-decreasing); it prints
`OK: {origin} size N root <base64>, ...` and exits 0, or names the first bad file and exits 1.
Add `--since-checkpoint FILE` with a checkpoint saved earlier to check that this log extends
it (a rollback or a fork fails).

## With standard tlog-tiles tools

Rust, the independent crates `signed_note` and `tlog_tiles`:

1. `let v = signed_note::StandardVerifier::new(KEY)?;` then
   `let note = signed_note::Note::from_bytes(&std::fs::read("checkpoint")?)?;` and
   `note.verify(&signed_note::VerifierList::new(vec![Box::new(v)]))?;`
2. `let cp = tlog_tiles::Checkpoint::from_bytes(note.text())?;` check `cp.origin() == "{origin}"`.
3. Implement `tlog_tiles::TileReader` (height 8) reading files from this folder: `tlog_tiles`
   names a tile `tile/8/<L>/<N>...` (with the height); the file is `tile/<L>/<N>...`.
4. `let r = tlog_tiles::TileHashReader::new(cp.size(), *cp.hash(), &reader);` and
   `tlog_tiles::tree_hash(cp.size(), &r)? == *cp.hash()` authenticates the tiles.
5. For each entry `i` of `tile/entries/...` (in order):
   `tlog_tiles::check_record(&tlog_tiles::prove_record(cp.size(), i, &r)?, cp.size(), *cp.hash(), i, tlog_tiles::record_hash(entry))?`.

Go, `golang.org/x/mod/sumdb/note` and `golang.org/x/mod/sumdb/tlog`:

1. `v, _ := note.NewVerifier(KEY)`; `n, err := note.Open(checkpointBytes, note.VerifierList(v))`.
2. Split `n.Text` into its three lines: origin, size, base64 root (`tlog.ParseTree` expects the
   go.sum header instead of an origin line, so parse these by hand) into a `tlog.Tree`.
3. Implement `tlog.TileReader` (`Height() = 8`) reading this folder: `tlog.Tile.Path()` gives
   `tile/8/<L>/<N>`, the file is `tile/<L>/<N>` (partial tiles: `.p/<W>` in both).
4. `tlog.TileHashReader(tree, reader)`, then for each entry `i`:
   `p, _ := tlog.ProveRecord(tree.N, i, hr)` and
   `tlog.CheckRecord(p, tree.N, tree.Hash, i, tlog.RecordHash(entry))`; entries are read from
   `tile/entries/<N>` (2-byte big-endian length prefixes; Go's own `tile/8/data/` layout differs).
"#
    )
}

//! The scrape's HTTP GET, with the headers Prometheus sends.
//!
//! - `Accept`: OpenMetrics 1.0.0 and 0.0.1 first, then text 0.0.4, then
//!   anything; `escaping=underscores` asks Prometheus 3 era clients to
//!   turn UTF-8 names into classic ones (the parser reads classic names
//!   only).
//! - `Accept-Encoding: gzip` (ureq decompresses), and the body is capped
//!   *after* decompression, so a compressed bomb stops at the cap.
//! - `X-Prometheus-Scrape-Timeout-Seconds`, so exporters can bound their
//!   own work; the whole request (connect, headers, body) has the timeout.
//! - No proxy from the environment (Prometheus' default), redirects
//!   followed (up to 10).

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::config::{Auth, ScrapeJob};

/// What Prometheus 3 sends, minus the protobuf and text 1.0.0 formats this
/// parser does not read.
pub const ACCEPT: &str = "application/openmetrics-text;version=1.0.0;escaping=underscores;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";

pub const USER_AGENT: &str = concat!("Flightdeck/", env!("CARGO_PKG_VERSION"));

/// A successful response.
#[derive(Debug)]
pub struct Fetched {
    pub body: Vec<u8>,
    pub content_type: Option<String>,
}

/// One HTTP client per job (connections are pooled per client).
pub struct Client {
    agent: ureq::Agent,
    auth: Option<Auth>,
    body_limit: u64,
}

impl Client {
    pub fn new(job: &ScrapeJob) -> Client {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .user_agent(USER_AGENT)
            .proxy(None)
            .max_redirects(10)
            .build()
            .into();
        Client {
            agent,
            auth: job.auth.clone(),
            body_limit: job.body_size_limit,
        }
    }

    /// GETs `url`; any transport error, non-2xx status or oversized body is
    /// an error message in Prometheus' words.
    pub fn fetch(&self, url: &str, timeout: Duration) -> Result<Fetched, String> {
        let mut req = self
            .agent
            .get(url)
            .config()
            .timeout_global(Some(timeout))
            .build()
            .header("Accept", ACCEPT)
            .header(
                "X-Prometheus-Scrape-Timeout-Seconds",
                format_seconds(timeout),
            );
        match &self.auth {
            None => {}
            Some(Auth::Basic { username, password }) => {
                let pw = password.read()?;
                req = req.header(
                    "Authorization",
                    format!("Basic {}", STANDARD.encode(format!("{username}:{pw}"))),
                );
            }
            Some(Auth::Header { kind, credentials }) => {
                let c = credentials.read()?;
                req = req.header("Authorization", format!("{kind} {c}"));
            }
        }
        let mut resp = req.call().map_err(|e| match e {
            ureq::Error::Timeout(_) => format!(
                "context deadline exceeded (timeout {})",
                format_seconds(timeout)
            ),
            other => other.to_string(),
        })?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!(
                "server returned HTTP status {} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            )
            .trim_end()
            .to_owned());
        }
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp
            .body_mut()
            .with_config()
            .limit(self.body_limit)
            .read_to_vec()
            .map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(n) => {
                    format!("body size limit exceeded ({n} bytes)")
                }
                ureq::Error::Timeout(_) => format!(
                    "context deadline exceeded while reading the body (timeout {})",
                    format_seconds(timeout)
                ),
                other => other.to_string(),
            })?;
        Ok(Fetched { body, content_type })
    }
}

/// Seconds as Go's `FormatFloat(s, 'f', -1, 64)`: `10`, `0.5`.
pub fn format_seconds(d: Duration) -> String {
    let s = format!("{}", d.as_secs_f64());
    s.strip_suffix(".0").map(str::to_owned).unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_as_go_formats_them() {
        assert_eq!(format_seconds(Duration::from_secs(10)), "10");
        assert_eq!(format_seconds(Duration::from_millis(1500)), "1.5");
    }
}

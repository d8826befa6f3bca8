//! Remote write 1.0 client: what `flightdeck agent --push URL` uses to send
//! collected batches to a Flightdeck (or any remote-write receiver).
//!
//! A batch is encoded as a `prometheus.WriteRequest` (float samples and
//! metadata; label order is checked by the receiver, so labels go out
//! sorted, as `model::Labels` keeps them), snappy block compressed, and
//! POSTed with the token as a Bearer credential. Like Prometheus' queue
//! manager it retries 5xx, 429 and transport errors with backoff, and drops
//! a batch the receiver refused with another 4xx (retrying cannot help).

use std::time::Duration;

use ingest::remote_write::proto::v1;
use model::WriteBatch;
use prost::Message;

/// Why a push did not go through.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The receiver refused the batch (4xx other than 429): do not retry.
    #[error("{url} refused the batch with {status}: {body}")]
    Refused {
        url: String,
        status: u16,
        body: String,
    },
    /// Still failing after the retries (5xx, 429, or no connection).
    #[error("pushing to {url} failed after {attempts} attempts: {last}")]
    GaveUp {
        url: String,
        attempts: u32,
        last: String,
    },
}

/// A remote-write target and its credential.
pub struct Pusher {
    agent: ureq::Agent,
    url: String,
    authorization: String,
    /// Attempts per batch (the first included).
    pub attempts: u32,
    /// Wait before the first retry; doubled each time, at most 30 s.
    pub backoff: Duration,
}

/// Encodes a batch as a snappy-compressed `WriteRequest`.
pub fn encode(batch: &WriteBatch) -> Vec<u8> {
    let req = v1::WriteRequest {
        timeseries: batch
            .series
            .iter()
            .map(|s| v1::TimeSeries {
                labels: s
                    .labels
                    .iter()
                    .map(|l| v1::Label {
                        name: l.name.as_bytes().to_vec(),
                        value: l.value.as_bytes().to_vec(),
                    })
                    .collect(),
                samples: s
                    .samples
                    .iter()
                    .map(|x| v1::Sample {
                        value: x.v,
                        timestamp: x.t,
                    })
                    .collect(),
                ..Default::default()
            })
            .collect(),
        metadata: batch
            .metadata
            .iter()
            .map(|(name, m)| v1::MetricMetadata {
                r#type: metric_type(m.metric_type),
                metric_family_name: name.clone(),
                help: m.help.clone(),
                unit: m.unit.clone(),
            })
            .collect(),
    };
    let raw = req.encode_to_vec();
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .unwrap_or_default()
}

/// `prometheus.MetricMetadata.MetricType` numbers.
fn metric_type(t: model::MetricType) -> i32 {
    use model::MetricType::*;
    match t {
        Unknown => 0,
        Counter => 1,
        Gauge => 2,
        Histogram => 3,
        GaugeHistogram => 4,
        Summary => 5,
        Info => 6,
        StateSet => 7,
    }
}

impl Pusher {
    pub fn new(url: impl Into<String>, token: &str, timeout: Duration) -> Pusher {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .user_agent(crate::scrape::http::USER_AGENT)
            .build()
            .into();
        Pusher {
            agent,
            url: url.into(),
            authorization: format!("Bearer {token}"),
            attempts: 5,
            backoff: Duration::from_millis(500),
        }
    }

    /// Sends one batch, retrying what may succeed later.
    pub fn push(&self, batch: &WriteBatch) -> Result<(), PushError> {
        let body = encode(batch);
        let mut wait = self.backoff;
        let mut last = String::new();
        for attempt in 1..=self.attempts.max(1) {
            let r = self
                .agent
                .post(&self.url)
                .header("Authorization", &self.authorization)
                .header("Content-Type", "application/x-protobuf")
                .header("Content-Encoding", "snappy")
                .header("X-Prometheus-Remote-Write-Version", "0.1.0")
                .send(&body[..]);
            match r {
                Ok(mut resp) => {
                    let status = resp.status().as_u16();
                    if (200..300).contains(&status) {
                        return Ok(());
                    }
                    let text = resp
                        .body_mut()
                        .with_config()
                        .limit(64 * 1024)
                        .read_to_string()
                        .unwrap_or_default();
                    if status != 429 && (400..500).contains(&status) {
                        return Err(PushError::Refused {
                            url: self.url.clone(),
                            status,
                            body: text,
                        });
                    }
                    last = format!("{status}: {text}");
                }
                Err(e) => last = e.to_string(),
            }
            if attempt < self.attempts {
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_secs(30));
            }
        }
        Err(PushError::GaveUp {
            url: self.url.clone(),
            attempts: self.attempts,
            last,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::{Labels, Sample, TimeSeries};

    #[test]
    fn encoding_round_trips_through_the_decoder() {
        let batch = WriteBatch {
            series: vec![TimeSeries {
                labels: Labels::from_pairs([("__name__", "up"), ("job", "a")]),
                samples: vec![
                    Sample { t: 1000, v: 1.0 },
                    Sample {
                        t: 2000,
                        v: f64::NAN,
                    },
                ],
                ..Default::default()
            }],
            metadata: vec![(
                "up".into(),
                model::Metadata {
                    metric_type: model::MetricType::Gauge,
                    help: "h".into(),
                    unit: String::new(),
                },
            )],
        };
        let raw = ingest::decompress::snappy_block(&encode(&batch), 1 << 20).unwrap();
        let d = ingest::remote_write::decode_v1(&raw).unwrap();
        assert!(d.rejected.is_empty());
        assert_eq!(d.batch.series[0].labels, batch.series[0].labels);
        assert_eq!(d.batch.series[0].samples[0], Sample { t: 1000, v: 1.0 });
        assert!(d.batch.series[0].samples[1].v.is_nan());
        assert_eq!(d.batch.metadata, batch.metadata);
    }

    #[test]
    fn refusals_are_not_retried_and_outages_are() {
        use std::io::{Read, Write};
        // A receiver that answers 400 once, then nothing (closed port).
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/api/v1/write", l.local_addr().unwrap());
        let t = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let _ = c.write_all(
                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 3\r\nconnection: close\r\n\r\nbad",
            );
        });
        let mut p = Pusher::new(&url, "t", Duration::from_secs(5));
        p.backoff = Duration::from_millis(1);
        let batch = WriteBatch::default();
        assert!(matches!(
            p.push(&batch),
            Err(PushError::Refused { status: 400, .. })
        ));
        t.join().unwrap();
        p.attempts = 3;
        assert!(matches!(
            p.push(&batch),
            Err(PushError::GaveUp { attempts: 3, .. })
        ));
    }
}

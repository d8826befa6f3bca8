//! Integration tests of the `agent` crate, one binary with a module per
//! area. Scrapes go to a real HTTP target on 127.0.0.1 (a small
//! `std::net::TcpListener` server, [`TestTarget`]), timestamps are chosen
//! by the test.

mod config;
mod logs_files;
mod logs_journal;
mod manager;
mod scrape;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent::scrape::{ScrapeConfig, ScrapeDefaults, ScrapeJob, Sink, compile_scrape_configs};
use model::{WriteBatch, is_stale_nan};

/// What the test target answers.
#[derive(Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub gzip: bool,
    pub delay: Duration,
}

impl Reply {
    pub fn text(body: &str) -> Reply {
        Reply {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: body.as_bytes().to_vec(),
            gzip: false,
            delay: Duration::ZERO,
        }
    }
}

/// A request the target received: the request line and the headers
/// (names lower-cased).
#[derive(Clone, Debug)]
pub struct Seen {
    pub line: String,
    pub headers: Vec<(String, String)>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An exposition endpoint on 127.0.0.1:<ephemeral>. Its thread lives as
/// long as the test process (blocked in `accept`).
pub struct TestTarget {
    pub addr: String,
    reply: Arc<Mutex<Reply>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl TestTarget {
    pub fn start(reply: Reply) -> TestTarget {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr").to_string();
        let reply = Arc::new(Mutex::new(reply));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (r, s) = (reply.clone(), seen.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (r, s) = (r.clone(), s.clone());
                std::thread::spawn(move || serve(conn, &r, &s));
            }
        });
        TestTarget { addr, reply, seen }
    }

    pub fn set(&self, reply: Reply) {
        *self.reply.lock().unwrap() = reply;
    }

    pub fn set_body(&self, body: &str) {
        self.reply.lock().unwrap().body = body.as_bytes().to_vec();
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve(mut conn: TcpStream, reply: &Mutex<Reply>, seen: &Mutex<Vec<Seen>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = head.split("\r\n");
    let line = lines.next().unwrap_or("").to_owned();
    let headers = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    seen.lock().unwrap().push(Seen { line, headers });
    let r = reply.lock().unwrap().clone();
    std::thread::sleep(r.delay);
    let body = if r.gzip {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&r.body).unwrap();
        e.finish().unwrap()
    } else {
        r.body
    };
    let enc = if r.gzip {
        "Content-Encoding: gzip\r\n"
    } else {
        ""
    };
    let head = format!(
        "HTTP/1.1 {} X\r\nContent-Type: {}\r\n{enc}Content-Length: {}\r\nConnection: close\r\n\r\n",
        r.status,
        r.content_type,
        body.len()
    );
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(&body);
}

/// A sink that keeps every batch.
#[derive(Default)]
pub struct Collect(pub Mutex<Vec<(String, WriteBatch)>>);

impl Sink for Collect {
    fn write(&self, project: &str, batch: WriteBatch) -> Result<(), String> {
        self.0.lock().unwrap().push((project.to_owned(), batch));
        Ok(())
    }
}

/// A batch as sorted lines `labels value @t`; `STALE` for stale markers;
/// `scrape_duration_seconds` values (timing) shown as `D`.
pub fn render(b: &WriteBatch) -> String {
    let mut lines: Vec<String> = b
        .series
        .iter()
        .flat_map(|s| {
            s.samples.iter().map(move |x| {
                let v = if is_stale_nan(x.v) {
                    "STALE".to_owned()
                } else if s.labels.metric_name() == Some("scrape_duration_seconds") {
                    "D".to_owned()
                } else {
                    format!("{}", x.v)
                };
                format!("{} {v} @{}", s.labels, x.t)
            })
        })
        .collect();
    lines.sort();
    lines.join("\n")
}

/// Compiles a TOML `[[scrape_configs]]` document with `{ADDR}` replaced.
pub fn jobs(toml_src: &str, addr: &str) -> Vec<ScrapeJob> {
    #[derive(serde::Deserialize)]
    struct File {
        scrape_configs: Vec<ScrapeConfig>,
    }
    let f: File = toml::from_str(&toml_src.replace("{ADDR}", addr))
        .unwrap_or_else(|e| panic!("test config: {e}"));
    compile_scrape_configs(&f.scrape_configs, &ScrapeDefaults::default())
        .unwrap_or_else(|e| panic!("test config: {e}"))
}

//! The realistic log mix of the log benchmarks, shared by `cargo bench -p flightdeck --bench
//! logs_push` (pushed over HTTP) and `cargo run -p logstore --example mix_study` (compressed
//! offline), which include this file with `#[path]` so that both see the same lines: nginx
//! access logs in JSON (60 %), JSON application logs with a random 128-bit trace id (25 %)
//! and logfmt with a random 64-bit request id (15 %), skewed towards popular values.

/// xorshift64*: a small seeded generator, so every run pushes the same lines.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// Skewed towards small values (popular IPs, routes).
    pub fn skewed(&mut self, n: u64) -> u64 {
        let a = self.below(n);
        self.below(a + 1)
    }
}

pub const ROUTES: [&str; 12] = [
    "/",
    "/api/v1/cart",
    "/api/v1/items",
    "/api/v1/items/{id}",
    "/api/v1/users/{id}",
    "/login",
    "/logout",
    "/static/app.js",
    "/static/app.css",
    "/healthz",
    "/search",
    "/api/v1/orders/{id}",
];
pub const AGENTS: [&str; 5] = [
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
    "curl/8.5.0",
    "Go-http-client/1.1",
    "Prometheus/2.42.0",
];

/// One line and its job; only nginx access logs when `nginx_only`.
pub fn line(r: &mut Rng, i: usize, nginx_only: bool) -> (&'static str, String) {
    let pick = if nginx_only { 0 } else { r.below(100) };
    match pick {
        0..=59 => {
            let status = match r.below(100) {
                0..=84 => 200,
                85..=89 => 304,
                90..=94 => 404,
                95..=97 => 500,
                _ => 503,
            };
            let route = ROUTES[r.skewed(ROUTES.len() as u64) as usize]
                .replace("{id}", &r.skewed(5000).to_string());
            (
                "nginx",
                format!(
                    r#"{{"remote_addr":"10.{}.{}.{}","method":"{}","uri":"{route}","status":{status},"body_bytes_sent":{},"request_time":{:.3},"http_user_agent":"{}"}}"#,
                    r.skewed(4),
                    r.skewed(64),
                    r.skewed(250),
                    if r.below(10) < 8 { "GET" } else { "POST" },
                    200 + r.skewed(40_000),
                    r.skewed(2000) as f64 / 1000.0,
                    AGENTS[r.skewed(AGENTS.len() as u64) as usize],
                ),
            )
        }
        60..=84 => (
            "app",
            format!(
                r#"{{"level":"{}","logger":"orders.service","msg":"order {} processed","user_id":{},"duration_ms":{},"trace_id":"{:016x}{:016x}"}}"#,
                ["info", "info", "info", "warn", "error"][r.below(5) as usize],
                100_000 + i,
                r.skewed(20_000),
                r.skewed(900),
                r.next(),
                r.next()
            ),
        ),
        _ => (
            "api",
            format!(
                "level={} caller=handler.go:{} method={} path={} status={} duration={}ms request_id={:016x}",
                ["debug", "info", "info", "warn"][r.below(4) as usize],
                80 + r.below(40),
                if r.below(2) == 0 { "GET" } else { "PUT" },
                ROUTES[r.skewed(ROUTES.len() as u64) as usize],
                [200, 200, 200, 201, 400, 500][r.below(6) as usize],
                r.skewed(1500),
                r.next()
            ),
        ),
    }
}

//! The accept loop: HTTP/1.1 connections served by hyper directly, so that
//! the connection settings axum's `serve` does not expose can be set.
//!
//! Why not `axum::serve`: it gives no access to hyper's connection
//! builder, and hyper reads request heads with no deadline unless a timer
//! is installed. A client that sends one header line per second
//! ("slowloris") then holds a connection, a task and its buffers for as
//! long as it likes; a few thousand such clients exhaust file descriptors.
//! Here every connection gets [`HEADER_READ_TIMEOUT`]: the whole request
//! head must arrive within it, or the connection is closed. The same timer
//! runs while a keep-alive connection waits for its next request, so idle
//! connections are closed after it too (clients such as Prometheus'
//! remote write reconnect as a matter of course).
//!
//! Graceful shutdown works as in `axum::serve`: stop accepting, let every
//! connection finish its request in flight, then return.

use std::pin::pin;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tower_service::Service;

/// Longest time a client may take to send a request line and headers
/// (and longest idle time of a keep-alive connection).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `shutdown` resolves, then drains.
/// Handlers see the peer address as `ConnectInfo<SocketAddr>`. A client
/// gets `header_timeout` (normally [`HEADER_READ_TIMEOUT`]) to send each
/// request head.
pub async fn serve_router(
    listener: tokio::net::TcpListener,
    app: Router,
    header_timeout: Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // `drain` tells connections to finish; every connection task holds a
    // clone of `open`, so `recv` returns `None` once all have ended.
    let (drain_tx, drain_rx) = tokio::sync::watch::channel(());
    let (open_tx, mut open_rx) = tokio::sync::mpsc::channel::<()>(1);
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let app = app.clone();
        let mut drain = drain_rx.clone();
        let open = open_tx.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                // Router is always ready (its `poll_ready` returns Ready).
                app.clone().call(req)
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades();
            let mut conn = pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                }
                // The one change is the drain (or the server dropping it).
                _ = drain.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(open);
        });
    }
    drop(listener);
    let _ = drain_tx.send(());
    drop(open_tx);
    let _ = open_rx.recv().await;
    Ok(())
}

/// Per-connection failures (the peer gave up before we accepted) are
/// ignored; anything else (e.g. out of file descriptors) is logged and
/// retried after a pause rather than spinning or ending the server.
async fn accept_error(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::warn!(error = %e, "accepting a connection failed; retrying in 1s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::SocketAddr;
    use std::time::Instant;

    /// A client that never finishes its request head is cut off after the
    /// header timeout, while complete requests on other connections are
    /// answered (with the peer address) before and after.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slow_header_is_cut_off() {
        let timeout = Duration::from_millis(400);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route(
            "/",
            axum::routing::get(|ConnectInfo(p): ConnectInfo<SocketAddr>| async move {
                format!("hello {}", p.ip())
            }),
        );
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_router(listener, app, timeout, async {
            let _ = stop_rx.await;
        }));
        let get = move || {
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut s = String::new();
            c.read_to_string(&mut s).unwrap();
            s
        };
        let slow = tokio::task::spawn_blocking(move || {
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let start = Instant::now();
            // One header line every 100 ms, never the blank line.
            for i in 0..100 {
                let line = if i == 0 {
                    "GET / HTTP/1.1\r\n".to_string()
                } else {
                    format!("x-slow-{i}: {i}\r\n")
                };
                if c.write_all(line.as_bytes()).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let mut buf = [0u8; 64];
            let n = c.read(&mut buf);
            (
                start.elapsed(),
                n.map(|n| String::from_utf8_lossy(&buf[..n]).into_owned()),
            )
        });
        let ok = tokio::task::spawn_blocking(get).await.unwrap();
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.ends_with("hello 127.0.0.1"), "{ok}");
        let (elapsed, read) = slow.await.unwrap();
        // Cut off: the writes failed early (reset) or the read saw the close;
        // never an answer to the unfinished request.
        assert!(
            elapsed < Duration::from_secs(5),
            "the slow connection stayed open for {elapsed:?}"
        );
        assert!(
            matches!(&read, Ok(s) if s.is_empty()) || read.is_err(),
            "{read:?}"
        );
        let ok = tokio::task::spawn_blocking(get).await.unwrap();
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        stop_tx.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}

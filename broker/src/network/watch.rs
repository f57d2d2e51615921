//! Per-connection timeouts the way a hostile client sees them, in two phases:
//! - reading a request's headers: from the first byte of a request (or from the accept, for a
//!   connection's first request) the whole head must arrive within `--header-read-timeout`;
//! - idle between requests on a keep-alive connection: `--idle-timeout`.
//!
//! hyper has one timer for both (its header-read timeout also runs while a keep-alive
//! connection waits for its next request), so a short header timeout would close ordinary
//! pooled connections. Here the connection's bytes ([`Watched`]) and its requests ([`Watch`])
//! tell the phases apart. While a request is being handled (a long poll, a slow store) neither
//! runs; a slow body has its own timeout where the body is read (`api/input.rs`).

use super::hits::Limit;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub header_read: Duration,
    pub idle: Duration,
}

/// What a connection is doing, shared by its byte stream and its service.
#[derive(Clone)]
pub struct Watch(Arc<Mutex<State>>);

struct State {
    in_flight: usize,
    /// When the head being read started: the accept for the first request, else its first byte.
    head_started: Option<Instant>,
    idle_since: Instant,
}

impl Default for Watch {
    fn default() -> Self {
        Watch::new()
    }
}

impl Watch {
    pub fn new() -> Self {
        let now = Instant::now();
        Watch(Arc::new(Mutex::new(State {
            in_flight: 0,
            head_started: Some(now),
            idle_since: now,
        })))
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn bytes_read(&self) {
        self.with(|s| {
            if s.in_flight == 0 && s.head_started.is_none() {
                s.head_started = Some(Instant::now());
            }
        });
    }

    /// A request's head has been read; it is being handled.
    pub fn request_started(&self) {
        self.with(|s| {
            s.in_flight += 1;
            s.head_started = None;
        });
    }

    /// The response is ready.
    pub fn request_done(&self) {
        self.with(|s| {
            s.in_flight = s.in_flight.saturating_sub(1);
            if s.in_flight == 0 {
                s.idle_since = Instant::now();
            }
        });
    }

    /// When the connection is to be closed if nothing changes, and which limit that would be;
    /// `None` while a request is being handled.
    pub fn deadline(&self, timeouts: Timeouts) -> Option<(Instant, Limit)> {
        self.with(|s| match (s.in_flight, s.head_started) {
            (0, Some(started)) => Some((started + timeouts.header_read, Limit::HeaderReadTimeout)),
            (0, None) => Some((s.idle_since + timeouts.idle, Limit::IdleTimeout)),
            _ => None,
        })
    }
}

/// A connection's byte stream that tells its [`Watch`] when bytes arrive.
pub struct Watched<S> {
    inner: S,
    watch: Watch,
}

impl<S> Watched<S> {
    pub fn new(inner: S, watch: Watch) -> Self {
        Watched { inner, watch }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.watch.bytes_read();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timeouts = Timeouts {
        header_read: Duration::from_secs(10),
        idle: Duration::from_secs(60),
    };

    /// Real time, bounded from both sides: the deadlines are taken from `Instant::now()` at
    /// the moment each phase starts.
    #[test]
    fn phases_pick_their_timeout() {
        let watch = Watch::new();
        let (_, limit) = watch.deadline(T).unwrap();
        assert_eq!(
            limit,
            Limit::HeaderReadTimeout,
            "a new connection owes its first head"
        );
        watch.bytes_read();
        watch.request_started();
        assert!(watch.deadline(T).is_none(), "no timeout while handling");
        let before = Instant::now();
        watch.request_done();
        let (at, limit) = watch.deadline(T).unwrap();
        assert_eq!(limit, Limit::IdleTimeout);
        assert!(
            at >= before + T.idle && at <= Instant::now() + T.idle,
            "idle from the response"
        );
        std::thread::sleep(Duration::from_millis(20));
        let before = Instant::now();
        watch.bytes_read();
        let (at, limit) = watch.deadline(T).unwrap();
        assert_eq!(
            limit,
            Limit::HeaderReadTimeout,
            "a byte starts the next head"
        );
        assert!(
            at >= before + T.header_read && at <= Instant::now() + T.header_read,
            "the head's time runs from its first byte, not from the accept"
        );
    }
}

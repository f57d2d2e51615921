//! The serving loop: accepts connections up to `--max-connections`, does the TLS handshake
//! when configured, and serves warp's routes over each connection with hyper, closing the
//! connections that take too long to send their headers or sit idle ([`super::watch`]).
//! warp 0.4 has no TLS and its acceptor is private: `warp::service(routes)` is served here
//! instead of through `warp::serve`.
//!
//! Graceful shutdown as before: when `shutdown` is cancelled no connection is accepted, each
//! connection finishes the request in flight (long polls return at once) and closes, and
//! `serve` returns once all have.

use super::hits::{self, Limit};
use super::tls::Tls;
use super::watch::{Timeouts, Watch, Watched};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;
use warp::Filter;
use warp::reply::Reply;

/// The client's address, in every request's extensions (`warp::ext::optional`).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

pub struct Settings {
    pub tls: Option<Arc<Tls>>,
    pub max_connections: usize,
    pub timeouts: Timeouts,
}

pub async fn serve<F, R>(
    listener: TcpListener,
    routes: F,
    settings: Settings,
    shutdown: CancellationToken,
) where
    F: Filter<Extract = (R,), Error = Infallible> + Clone + Send + Sync + 'static,
    F::Future: Send,
    R: Reply,
{
    let service = warp::service(routes);
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let connections = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors, or a connection reset before it was accepted:
                    // wait a little rather than spin.
                    tracing::warn!(error = %err, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            hits::hit(
                Limit::MaxConnections,
                Some(peer.ip()),
                &format!(
                    "closed a connection: {} connections are open (--max-connections)",
                    settings.max_connections
                ),
            );
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let tls = settings.tls.as_ref().map(|tls| tls.acceptor());
        let timeouts = settings.timeouts;
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            match tls {
                None => connection(stream, peer, service, timeouts, shutdown).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(timeouts.header_read, acceptor.accept(stream));
                    match handshake.await {
                        Ok(Ok(stream)) => {
                            connection(stream, peer, service, timeouts, shutdown).await
                        }
                        Ok(Err(err)) => hits::hit(
                            Limit::TlsHandshake,
                            Some(peer.ip()),
                            &format!("TLS handshake failed: {err}"),
                        ),
                        Err(_) => hits::hit(
                            Limit::TlsHandshake,
                            Some(peer.ip()),
                            "TLS handshake not done within --header-read-timeout",
                        ),
                    }
                }
            }
            drop(slot);
        });
    }
    connections.close();
    connections.wait().await;
}

/// Serves one connection until the client closes it, a timeout closes it, or shutdown.
async fn connection<S, H>(
    stream: S,
    peer: SocketAddr,
    service: H,
    timeouts: Timeouts,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Service<hyper::Request<Incoming>, Response = warp::reply::Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    H::Future: Send + 'static,
{
    let watch = Watch::new();
    let io = TokioIo::new(Watched::new(stream, watch.clone()));
    let requests = watch.clone();
    let handler = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ClientAddr(peer));
        requests.request_started();
        let done = requests.clone();
        let answer = service.clone().call(request);
        async move {
            let response = answer.await;
            done.request_done();
            response
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(io, handler);
    let mut conn = std::pin::pin!(conn);
    let mut stopping = false;
    loop {
        // While a request is being handled there is no deadline: look again later.
        let at = watch.deadline(timeouts).map_or_else(
            || tokio::time::Instant::now() + timeouts.header_read,
            |(at, _)| at,
        );
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(err) = result
                    && !err.is_incomplete_message()
                {
                    tracing::debug!(client = %peer, error = %err, "connection ended");
                }
                return;
            }
            _ = tokio::time::sleep_until(at) => {
                if let Some((now_at, limit)) = watch.deadline(timeouts)
                    && now_at <= tokio::time::Instant::now()
                {
                    let why = match limit {
                        Limit::IdleTimeout => "closed a keep-alive connection idle for --idle-timeout",
                        _ => "closed a connection that did not send a request's headers within --header-read-timeout",
                    };
                    hits::hit(limit, Some(peer.ip()), why);
                    return;
                }
            }
            _ = shutdown.cancelled(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

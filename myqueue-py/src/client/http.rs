//! Typed calls to the broker's HTTP API.

use super::error::{ClientError, Result};
use myqueue_wire::{
    CommitRequest, CommitResponse, ConsumerRequest, CreateTopicRequest, DeleteTopicResponse,
    ErrorCode, ErrorResponse, FetchLimits, FetchRequest, FetchResponse, ListTopicsResponse,
    NamedOffset, Num, OffsetSpec, RegisterConsumerRequest, RegisterConsumerResponse,
    RegisterProducerRequest, RegisterProducerResponse, RetentionValue, SizeResponse, TopicResponse,
    UpdateTopicRequest,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::PathBuf;
use std::time::Duration;

/// How long a connection attempt may take: an unreachable broker is reported quickly.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The environment variable a token is read from when none is given.
pub const TOKEN_VARIABLE: &str = "MYQUEUE_TOKEN";

/// The environment variable `ca_file` is read from when none is given.
pub const CA_FILE_VARIABLE: &str = "MYQUEUE_CA_FILE";

/// How to reach a broker beyond its address: a token for `--auth-file` brokers, and the CA
/// certificates to trust for `https://` (the system's when `None`).
#[derive(Clone, Debug, Default)]
pub struct ConnectOptions {
    /// `None`: `MYQUEUE_TOKEN` if set.
    pub token: Option<String>,
    /// `None`: `MYQUEUE_CA_FILE` if set, else the system's roots.
    pub ca_file: Option<PathBuf>,
}

/// A connection pool to one broker.
#[derive(Clone)]
pub struct BrokerClient {
    http: reqwest::Client,
    base: String,
    request_timeout: Duration,
    options: ConnectOptions,
}

/// `localhost:9092`, `127.0.0.1:9092`, `http://host:port` or `https://host:port` →
/// `http(s)://host:port`. Over plain HTTP `localhost` becomes 127.0.0.1: the broker listens on
/// IPv4 by default, and trying `::1` first would cost every new connection a refused attempt.
/// Over HTTPS the name stays: the certificate is checked against it.
pub fn base_url(broker: &str) -> Result<String> {
    let broker = broker.trim().trim_end_matches('/');
    let (scheme, address) = match broker.strip_prefix("https://") {
        Some(address) => ("https", address),
        None => ("http", broker.strip_prefix("http://").unwrap_or(broker)),
    };
    if address.is_empty() || address.contains("://") || address.contains('/') {
        return Err(ClientError::Invalid(format!(
            "broker must look like 'host:port', 'http://host:port' or 'https://host:port', not {broker:?}"
        )));
    }
    let address = match address.strip_prefix("localhost") {
        Some(rest) if scheme == "http" && (rest.is_empty() || rest.starts_with(':')) => {
            format!("127.0.0.1{rest}")
        }
        _ => address.to_owned(),
    };
    let address = if address.contains(':') {
        address
    } else {
        format!("{address}:{}", myqueue_wire::DEFAULT_PORT)
    };
    Ok(format!("{scheme}://{address}"))
}

impl BrokerClient {
    pub fn new(broker: &str, request_timeout: Duration, options: &ConnectOptions) -> Result<Self> {
        let invalid = |what: String| ClientError::Invalid(what);
        let base = base_url(broker)?;
        // rustls needs one crypto provider for the process; a second install is a no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .no_proxy()
            .pool_idle_timeout(Duration::from_secs(60));
        let token = options
            .token
            .clone()
            .or_else(|| std::env::var(TOKEN_VARIABLE).ok())
            .filter(|t| !t.trim().is_empty());
        if let Some(token) = &token {
            let mut value =
                reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.trim()))
                    .map_err(|_| invalid("the token must be printable ASCII".to_owned()))?;
            value.set_sensitive(true);
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(reqwest::header::AUTHORIZATION, value);
            builder = builder.default_headers(headers);
        }
        let ca_file = options
            .ca_file
            .clone()
            .or_else(|| std::env::var_os(CA_FILE_VARIABLE).map(PathBuf::from));
        if let Some(ca_file) = &ca_file {
            let pem = std::fs::read(ca_file).map_err(|err| {
                invalid(format!("cannot read ca_file {}: {err}", ca_file.display()))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|err| {
                invalid(format!(
                    "ca_file {} holds no PEM certificate: {err}",
                    ca_file.display()
                ))
            })?;
            if certs.is_empty() {
                return Err(invalid(format!(
                    "ca_file {} holds no PEM certificate",
                    ca_file.display()
                )));
            }
            builder = builder.tls_certs_only(certs);
        }
        let http = builder
            .build()
            .map_err(|err| invalid(format!("cannot build the HTTP client: {err}")))?;
        Ok(BrokerClient {
            http,
            base,
            request_timeout,
            options: ConnectOptions { token, ca_file },
        })
    }

    /// A new client with the same settings (for a forked child: a pool is not fork-safe).
    pub fn renewed(&self) -> Result<Self> {
        BrokerClient::new(&self.base, self.request_timeout, &self.options)
    }

    pub fn options(&self) -> &ConnectOptions {
        &self.options
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> Result<T> {
        let response = request
            .timeout(timeout)
            .send()
            .await
            .map_err(|err| unavailable(&self.base, err))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|err| unavailable(&self.base, err))?;
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|err| {
                ClientError::Unavailable(format!("unexpected answer from {}: {err}", self.base))
            });
        }
        match serde_json::from_slice::<ErrorResponse>(&body) {
            // A 5xx may have happened after the request took effect: only a retry can tell.
            Ok(error) if error.code.is_retriable() || status.is_server_error() => {
                Err(ClientError::Unavailable(error.message))
            }
            Ok(error) => Err(ClientError::Rejected {
                code: error.code,
                message: error.message,
            }),
            Err(_) if status.is_server_error() => Err(ClientError::Unavailable(format!(
                "{} answered HTTP {status}",
                self.base
            ))),
            Err(_) => Err(ClientError::Rejected {
                code: ErrorCode::Unknown,
                message: format!(
                    "{} answered HTTP {status}: {}",
                    self.base,
                    String::from_utf8_lossy(&body[..body.len().min(200)])
                ),
            }),
        }
    }

    /// A GET of `path`; the query string comes from `.query()` with a wire type.
    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(format!("{}{path}", self.base))
    }

    async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        let request = self.http.post(format!("{}{path}", self.base)).json(body);
        self.send(request, self.request_timeout).await
    }

    /// Creates `topic` with retention settings of its own (`None`: the broker's default).
    pub async fn create_topic(
        &self,
        topic: &str,
        retention_ms: Option<u64>,
        retention_bytes: Option<u64>,
    ) -> Result<()> {
        let _: serde_json::Value = self
            .post(
                "/topics",
                &CreateTopicRequest {
                    name: topic.to_owned(),
                    retention_ms: retention_ms.map(RetentionValue::Set),
                    retention_bytes: retention_bytes.map(RetentionValue::Set),
                },
            )
            .await?;
        Ok(())
    }

    /// `/topics/{name}`; topic names are `[A-Za-z0-9._-]`, nothing needs escaping.
    fn topic_url(&self, topic: &str) -> Result<String> {
        myqueue_wire::check_topic_name(topic).map_err(ClientError::Invalid)?;
        Ok(format!("{}/topics/{topic}", self.base))
    }

    /// What `topic` holds, its retention and its consumers.
    pub async fn describe_topic(&self, topic: &str) -> Result<TopicResponse> {
        let request = self.http.get(self.topic_url(topic)?);
        self.send(request, self.request_timeout).await
    }

    /// Changes `topic`'s retention settings (see [`UpdateTopicRequest`]).
    pub async fn update_topic(
        &self,
        topic: &str,
        change: &UpdateTopicRequest,
    ) -> Result<TopicResponse> {
        let request = self.http.patch(self.topic_url(topic)?).json(change);
        self.send(request, self.request_timeout).await
    }

    /// Deletes `topic` with its messages, producers and consumers.
    pub async fn delete_topic(&self, topic: &str) -> Result<()> {
        let request = self.http.delete(self.topic_url(topic)?);
        let _: DeleteTopicResponse = self.send(request, self.request_timeout).await?;
        Ok(())
    }

    pub async fn list_topics(&self) -> Result<Vec<String>> {
        let request = self.get("/topics");
        let response: ListTopicsResponse = self.send(request, self.request_timeout).await?;
        Ok(response.topics)
    }

    pub async fn register_producer(&self, topic: &str) -> Result<u64> {
        let response: RegisterProducerResponse = self
            .post(
                "/producer/register",
                &RegisterProducerRequest {
                    topic: topic.to_owned(),
                },
            )
            .await?;
        Ok(response.producer_id)
    }

    /// Registers a consumer of `topic`; `start` is where a new one starts (the broker's
    /// `--consumer-start` when `None`).
    pub async fn register_consumer(
        &self,
        topic: &str,
        group: Option<&str>,
        start: Option<NamedOffset>,
    ) -> Result<u64> {
        let response: RegisterConsumerResponse = self
            .post(
                "/consumer/register",
                &RegisterConsumerRequest {
                    topic: topic.to_owned(),
                    group: group.map(str::to_owned),
                    start,
                },
            )
            .await?;
        Ok(response.consumer_id)
    }

    /// Sends a `produce_batch` body serialised once by the caller (it is resent as is on retry).
    pub async fn produce_batch<T: DeserializeOwned>(&self, body: bytes::Bytes) -> Result<T> {
        let request = self
            .http
            .post(format!("{}/producer/produce_batch", self.base))
            .header("content-type", "application/json")
            .body(body);
        self.send(request, self.request_timeout).await
    }

    /// Reads what `limits` allow from `offset` (the committed position when `None`), waiting
    /// up to the limits' wait for the first message.
    pub async fn fetch(
        &self,
        topic: &str,
        consumer_id: u64,
        offset: Option<u64>,
        limits: FetchLimits,
    ) -> Result<FetchResponse> {
        let query = FetchRequest::new(topic, consumer_id, offset, limits);
        let request = self.get("/consumer/fetch").query(&query);
        self.send(request, self.request_timeout + limits.wait())
            .await
    }

    pub async fn commit(&self, topic: &str, consumer_id: u64, offset: OffsetSpec) -> Result<u64> {
        let response: CommitResponse = self
            .post(
                "/consumer/commit",
                &CommitRequest {
                    topic: topic.to_owned(),
                    consumer_id: Num(consumer_id),
                    offset,
                },
            )
            .await?;
        Ok(response.position)
    }

    pub async fn size(&self, topic: &str, consumer_id: u64) -> Result<u64> {
        let query = ConsumerRequest {
            topic: topic.to_owned(),
            consumer_id: Num(consumer_id),
        };
        let request = self.get("/size").query(&query);
        let response: SizeResponse = self.send(request, self.request_timeout).await?;
        Ok(response.size)
    }
}

fn unavailable(base: &str, err: reqwest::Error) -> ClientError {
    if let Some(problem) = tls_problem(&err) {
        return ClientError::Tls(format!("{base}: {problem}"));
    }
    let what = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    // reqwest's Display hides the cause (e.g. "connection refused"); walk the chain.
    let mut detail = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        detail = format!("{detail}: {cause}");
        source = cause.source();
    }
    ClientError::Unavailable(format!("{what} ({base}): {detail}"))
}

/// A TLS failure in `err`'s causes (a certificate that is expired, untrusted or for another
/// host, or a server that does not speak TLS): sending again cannot help.
fn tls_problem(err: &reqwest::Error) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(cause) = source {
        if let Some(tls) = cause.downcast_ref::<rustls::Error>() {
            return Some(describe_tls(tls));
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && let Some(tls) = io.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>())
        {
            return Some(describe_tls(tls));
        }
        source = cause.source();
    }
    // The connector may hand the rustls error over as text only (boxed in a type of its own):
    // rustls's own wording, then.
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    let said = |words: &str| text.contains(words);
    let problem = if said("certificate expired") || said("Expired") {
        "the broker's certificate has expired"
    } else if said("UnknownIssuer") || said("unknown issuer") {
        "the broker's certificate is not signed by a trusted CA; pass ca_file= with the CA that \
         signed it"
    } else if said("not valid for name") || said("NotValidForName") {
        "the broker's certificate is for another host name"
    } else if said("invalid peer certificate") {
        "the broker's certificate was refused"
    } else if said("InvalidContentType") || said("corrupt message") || said("tls handshake eof") {
        "TLS failed; is the broker serving HTTPS?"
    } else {
        return None;
    };
    let detail = text.rsplit(": ").take(2).collect::<Vec<_>>();
    Some(format!(
        "{problem} ({})",
        detail.into_iter().rev().collect::<Vec<_>>().join(": ")
    ))
}

fn describe_tls(err: &rustls::Error) -> String {
    use rustls::CertificateError::*;
    match err {
        rustls::Error::InvalidCertificate(Expired | ExpiredContext { .. }) => {
            format!("the broker's certificate has expired ({err})")
        }
        rustls::Error::InvalidCertificate(UnknownIssuer) => format!(
            "the broker's certificate is not signed by a trusted CA ({err}); pass ca_file= with \
             the CA that signed it"
        ),
        rustls::Error::InvalidCertificate(NotValidForName | NotValidForNameContext { .. }) => {
            format!("the broker's certificate is for another host name ({err})")
        }
        rustls::Error::InvalidCertificate(_) => {
            format!("the broker's certificate was refused ({err})")
        }
        _ => format!("TLS failed ({err}); is the broker serving HTTPS?"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_addresses_are_normalised() {
        assert_eq!(base_url("localhost:9092").unwrap(), "http://127.0.0.1:9092");
        assert_eq!(
            base_url("http://10.0.0.5:80/").unwrap(),
            "http://10.0.0.5:80"
        );
        assert_eq!(base_url("localhost").unwrap(), "http://127.0.0.1:9092");
        assert_eq!(base_url("localhostx:1").unwrap(), "http://localhostx:1");
        assert_eq!(
            base_url("https://localhost:1/").unwrap(),
            "https://localhost:1"
        );
        assert!(base_url("ftp://x:1").is_err());
        assert!(base_url("").is_err());
    }
}

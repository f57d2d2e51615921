//! Request parameters, read liberally: clients of the assignment's API were written many
//! ways. Parameters may come as a JSON body (any content type, even on GET), as a form body,
//! or in the query string. The body is read up to the configured limit and no further.
//! Liberal in where, strict in what: a JSON body must be an object and a form body
//! `key=value` pairs, else the request is refused before it touches anything.

use super::error::ApiError;
use crate::network::hits::{self, Limit};
use crate::network::serve::ClientAddr;
use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use myqueue_wire::ErrorCode;
use serde::de::DeserializeOwned;
use std::time::Duration;
use warp::{Filter, Rejection};

/// A request's raw parameters, before they are parsed into the endpoint's type.
pub struct Input {
    query: String,
    body: Bytes,
    form: bool,
}

impl Input {
    /// Parses the parameters into `T`: the body when there is one, else the query string.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        let body = self.body.trim_ascii();
        if !body.is_empty() {
            if self.form && !body.starts_with(b"{") {
                check_form(body)?;
                return serde_urlencoded::from_bytes(body)
                    .map_err(|err| ApiError::invalid(format!("invalid form body: {err}")));
            }
            // serde reads a JSON array into a struct field by field (`["x"]` would name a
            // topic): only an object is a request. One whole object follows from from_slice,
            // which refuses trailing data.
            if !body.starts_with(b"{") {
                return Err(ApiError::invalid(
                    "the JSON body must be an object, e.g. {\"topic\": \"logs\"}",
                ));
            }
            return serde_json::from_slice(body)
                .map_err(|err| ApiError::invalid(format!("invalid JSON body: {err}")));
        }
        if !self.query.is_empty() {
            return serde_urlencoded::from_str(&self.query)
                .map_err(|err| ApiError::invalid(format!("invalid query string: {err}")));
        }
        serde_json::from_str("{}").map_err(|err| {
            ApiError::invalid(format!(
                "no parameters: send them as a JSON body or in the query string ({err})"
            ))
        })
    }
}

/// A form body must be `key=value` pairs joined by `&`: serde_urlencoded would read a bare
/// word as a key with an empty value, and a pair without a key as nothing at all.
fn check_form(body: &[u8]) -> Result<(), ApiError> {
    let proper = |pair: &[u8]| {
        pair.iter()
            .position(|&b| b == b'=')
            .is_some_and(|eq| eq > 0)
    };
    match body.split(|&b| b == b'&').find(|pair| !proper(pair)) {
        None => Ok(()),
        Some(pair) => Err(ApiError::invalid(format!(
            "invalid form body: {:?} is not a key=value pair",
            String::from_utf8_lossy(pair)
        ))),
    }
}

/// Extracts [`Input`], refusing bodies over `max_body` bytes with `payload_too_large` (also
/// when the body is chunked and has no Content-Length).
pub fn input(
    max_body: usize,
    body_timeout: Duration,
) -> impl Filter<Extract = (Input,), Error = Rejection> + Clone {
    warp::query::raw()
        .or(warp::any().map(String::new))
        .unify()
        .and(warp::header::optional::<String>("content-type"))
        .and(warp::header::optional::<String>("content-length"))
        .and(warp::body::stream())
        .and(warp::ext::optional::<ClientAddr>())
        .and_then(
            move |query: String, content_type: Option<String>, length: Option<String>, body, client: Option<ClientAddr>| async move {
                if let Some(length) = length.and_then(|l| l.trim().parse::<u64>().ok())
                    && length > max_body as u64
                {
                    return Err(warp::reject::custom(too_large(max_body)));
                }
                let body = tokio::time::timeout(body_timeout, read_body(body, max_body))
                    .await
                    .map_err(|_| {
                        hits::hit(
                            Limit::BodyReadTimeout,
                            client.map(|ClientAddr(addr)| addr.ip()),
                            "refused a request whose body did not arrive within --body-read-timeout",
                        );
                        warp::reject::custom(ApiError::new(
                            ErrorCode::RequestTimeout,
                            format!("the request body did not arrive within {body_timeout:?}"),
                        ))
                    })?
                    .map_err(warp::reject::custom)?;
                let form = content_type
                    .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
                Ok::<_, Rejection>(Input { query, body, form })
            },
        )
}

fn too_large(max_body: usize) -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        format!("the request body is over the limit of {max_body} bytes"),
    )
}

async fn read_body<B: Buf>(
    body: impl Stream<Item = Result<B, warp::Error>>,
    max_body: usize,
) -> Result<Bytes, ApiError> {
    let mut body = std::pin::pin!(body);
    let mut collected = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let mut chunk =
            chunk.map_err(|err| ApiError::invalid(format!("cannot read the body: {err}")))?;
        if collected.len() + chunk.remaining() > max_body {
            return Err(too_large(max_body));
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            collected.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(collected.freeze())
}

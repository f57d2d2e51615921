//! The one mapping from everything that can go wrong to the JSON error shape:
//! `{"status": "failure", "message": ..., "code": ...}` with the code's HTTP status.
//! warp's own rejections (unknown path, wrong method, ...) go through it too, so no request
//! is ever answered with plain text or HTML.

use crate::store::StoreError;
use myqueue_wire::{ErrorCode, ErrorResponse};
use std::convert::Infallible;
use warp::http::StatusCode;
use warp::reject::Rejection;
use warp::reply::{Reply, Response};

/// A failed request: a code and a message for people.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::InvalidRequest, message)
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        ApiError::new(err.code(), err.to_string())
    }
}

impl warp::reject::Reject for ApiError {}

impl Reply for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        warp::reply::with_status(
            warp::reply::json(&ErrorResponse::new(self.code, self.message)),
            status,
        )
        .into_response()
    }
}

/// Answers a handler's result: 200 with the body, or the error.
pub fn respond<T: serde::Serialize>(result: Result<T, ApiError>) -> Response {
    match result {
        Ok(body) => warp::reply::json(&body).into_response(),
        Err(err) => err.into_response(),
    }
}

/// The `recover` handler: turns every rejection into the JSON error shape.
pub async fn recover(rejection: Rejection) -> Result<Response, Infallible> {
    use warp::reject::{
        InvalidHeader, InvalidQuery, LengthRequired, MethodNotAllowed, PayloadTooLarge,
        UnsupportedMediaType,
    };
    let error = if let Some(err) = rejection.find::<ApiError>() {
        err.clone()
    } else if rejection.is_not_found() {
        ApiError::new(
            ErrorCode::NotFound,
            "no such endpoint; see the README for the API",
        )
    } else if rejection.find::<MethodNotAllowed>().is_some() {
        ApiError::new(
            ErrorCode::MethodNotAllowed,
            "this endpoint does not take this HTTP method",
        )
    } else if rejection.find::<PayloadTooLarge>().is_some() {
        ApiError::new(ErrorCode::PayloadTooLarge, "the request body is too large")
    } else if rejection.find::<LengthRequired>().is_some() {
        ApiError::invalid("a Content-Length header is required")
    } else if rejection.find::<UnsupportedMediaType>().is_some() {
        ApiError::new(ErrorCode::UnsupportedMediaType, "expected a JSON body")
    } else if let Some(err) = rejection.find::<InvalidHeader>() {
        ApiError::invalid(format!("invalid header: {}", err.name()))
    } else if rejection.find::<InvalidQuery>().is_some() {
        ApiError::invalid("invalid query string")
    } else {
        tracing::error!(?rejection, "unexpected rejection");
        ApiError::new(
            ErrorCode::Internal,
            format!("unexpected error: {rejection:?}"),
        )
    };
    Ok(error.into_response())
}

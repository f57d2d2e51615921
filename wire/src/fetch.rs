//! The limits of one `fetch` and their one check: the broker applies it to every request, the
//! client to its settings before it sends any, so both refuse the same values.

use crate::Num;
use std::fmt;
use std::time::Duration;

/// Messages a `fetch` answers with when the request does not say.
pub const DEFAULT_FETCH_MESSAGES: u32 = 1000;
/// Most messages one `fetch` answers with.
pub const MAX_FETCH_MESSAGES: u32 = 10_000;
/// Payload bytes a `fetch` answers with when the request does not say (past its first
/// message, which always comes).
pub const DEFAULT_FETCH_BYTES: u64 = 4 * 1024 * 1024;
/// Most payload bytes a `fetch` may ask for.
pub const MAX_FETCH_BYTES: u64 = 16 * 1024 * 1024;
/// Longest a `fetch` may wait for new messages (`wait_ms`).
pub const MAX_FETCH_WAIT_MS: u64 = 30_000;

/// What one fetch may return and how long it may wait; only [`FetchLimits::new`] makes one,
/// so a value of this type is always within the limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchLimits {
    max_messages: u32,
    max_bytes: u64,
    wait_ms: u64,
}

/// A fetch parameter outside its limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchLimitError {
    /// `max_messages` is not in 1..=[`MAX_FETCH_MESSAGES`].
    MaxMessages,
    /// `max_bytes` is not in 1..=[`MAX_FETCH_BYTES`].
    MaxBytes,
    /// `wait_ms` is over [`MAX_FETCH_WAIT_MS`].
    WaitMs,
}

impl FetchLimitError {
    /// The request field at fault, as the query string names it.
    pub fn field(self) -> &'static str {
        match self {
            FetchLimitError::MaxMessages => "max_messages",
            FetchLimitError::MaxBytes => "max_bytes",
            FetchLimitError::WaitMs => "wait_ms",
        }
    }

    /// What the field must be, e.g. `between 1 and 10000`.
    pub fn rule(self) -> String {
        match self {
            FetchLimitError::MaxMessages => format!("between 1 and {MAX_FETCH_MESSAGES}"),
            FetchLimitError::MaxBytes => format!("between 1 and {MAX_FETCH_BYTES}"),
            FetchLimitError::WaitMs => format!("at most {MAX_FETCH_WAIT_MS}"),
        }
    }
}

impl fmt::Display for FetchLimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} must be {}", self.field(), self.rule())
    }
}

impl std::error::Error for FetchLimitError {}

impl FetchLimits {
    /// Checks a fetch's parameters; `None` takes the default (no waiting for `wait_ms`).
    pub fn new(
        max_messages: Option<u64>,
        max_bytes: Option<u64>,
        wait_ms: Option<u64>,
    ) -> Result<Self, FetchLimitError> {
        let max_messages = max_messages.map_or(Ok(DEFAULT_FETCH_MESSAGES), |n| {
            u32::try_from(n)
                .ok()
                .filter(|n| (1..=MAX_FETCH_MESSAGES).contains(n))
                .ok_or(FetchLimitError::MaxMessages)
        })?;
        let max_bytes = max_bytes.unwrap_or(DEFAULT_FETCH_BYTES);
        if !(1..=MAX_FETCH_BYTES).contains(&max_bytes) {
            return Err(FetchLimitError::MaxBytes);
        }
        let wait_ms = wait_ms.unwrap_or(0);
        if wait_ms > MAX_FETCH_WAIT_MS {
            return Err(FetchLimitError::WaitMs);
        }
        Ok(FetchLimits {
            max_messages,
            max_bytes,
            wait_ms,
        })
    }

    pub fn max_messages(self) -> u32 {
        self.max_messages
    }

    pub fn max_bytes(self) -> u64 {
        self.max_bytes
    }

    /// How long the fetch waits for a first message.
    pub fn wait(self) -> Duration {
        Duration::from_millis(self.wait_ms)
    }

    pub fn wait_ms(self) -> u64 {
        self.wait_ms
    }
}

impl crate::FetchRequest {
    /// A request for what `limits` allow, from `offset` (the committed position when `None`).
    pub fn new(
        topic: impl Into<String>,
        consumer_id: u64,
        offset: Option<u64>,
        limits: FetchLimits,
    ) -> Self {
        crate::FetchRequest {
            topic: topic.into(),
            consumer_id: Num(consumer_id),
            offset: offset.map(Num),
            max_messages: Some(Num(limits.max_messages.into())),
            max_bytes: Some(Num(limits.max_bytes)),
            wait_ms: Some(Num(limits.wait_ms)),
        }
    }

    /// The request's limits, checked, with the defaults for what it does not say.
    pub fn limits(&self) -> Result<FetchLimits, FetchLimitError> {
        FetchLimits::new(
            self.max_messages.map(|n| n.0),
            self.max_bytes.map(|n| n.0),
            self.wait_ms.map(|n| n.0),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_parameters_take_the_defaults() {
        let limits = FetchLimits::new(None, None, None).unwrap();
        assert_eq!(limits.max_messages(), DEFAULT_FETCH_MESSAGES);
        assert_eq!(limits.max_bytes(), DEFAULT_FETCH_BYTES);
        assert_eq!(limits.wait(), Duration::ZERO);
    }

    #[test]
    fn the_bounds_are_inclusive() {
        let max = Some(MAX_FETCH_MESSAGES as u64);
        let limits = FetchLimits::new(max, Some(MAX_FETCH_BYTES), Some(MAX_FETCH_WAIT_MS));
        assert_eq!(limits.unwrap().wait_ms(), MAX_FETCH_WAIT_MS);
        assert!(FetchLimits::new(Some(1), Some(1), Some(0)).is_ok());
    }

    #[test]
    fn a_request_carries_its_limits() {
        let limits = FetchLimits::new(Some(7), Some(300), Some(20_000)).unwrap();
        let request = crate::FetchRequest::new("t", 3, Some(5), limits);
        assert_eq!(request.limits(), Ok(limits));
        assert_eq!(request.offset, Some(Num(5)));
    }

    #[test]
    fn values_outside_the_limits_name_their_field() {
        let err = |m, b, w| FetchLimits::new(m, b, w).unwrap_err();
        assert_eq!(err(Some(0), None, None), FetchLimitError::MaxMessages);
        assert_eq!(
            err(Some(MAX_FETCH_MESSAGES as u64 + 1), None, None),
            FetchLimitError::MaxMessages
        );
        assert_eq!(
            err(Some(u64::MAX), None, None),
            FetchLimitError::MaxMessages
        );
        assert_eq!(err(None, Some(0), None), FetchLimitError::MaxBytes);
        assert_eq!(
            err(None, Some(MAX_FETCH_BYTES + 1), None),
            FetchLimitError::MaxBytes
        );
        assert_eq!(
            err(None, None, Some(MAX_FETCH_WAIT_MS + 1)),
            FetchLimitError::WaitMs
        );
        assert_eq!(
            err(Some(0), None, None).to_string(),
            "max_messages must be between 1 and 10000"
        );
        assert_eq!(
            err(None, None, Some(30_001)).to_string(),
            "wait_ms must be at most 30000"
        );
    }
}

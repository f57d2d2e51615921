//! PostgreSQL's binary `COPY` format, for the messages of an append group: a fifth less server
//! CPU per row than a multi-row INSERT over arrays, and twice the rows per second at 2,000
//! rows (`bench/copy_vs_insert.py`, docs/BENCHMARKS.md).
//!
//! The format (PostgreSQL's documentation, "COPY", "Binary Format"): a signature, flags and a
//! header extension length; then per row a 16-bit field count and each field as a 32-bit length
//! and its bytes, integers big-endian; then a 16-bit -1.

/// The signature, the flags (no OIDs) and an empty header extension.
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
const TRAILER: [u8; 2] = (-1i16).to_be_bytes();
/// `messages`' columns, in the order of [`MESSAGES_COPY`].
const FIELDS: i16 = 5;

/// The statement the rows of [`MessageRows`] are sent to.
pub const MESSAGES_COPY: &str = "COPY messages (topic_id, log_offset, producer_id, stored_ms, payload) \
     FROM STDIN (FORMAT BINARY)";

/// Rows for [`MESSAGES_COPY`], encoded as they are added.
pub struct MessageRows {
    data: Vec<u8>,
    rows: usize,
}

impl MessageRows {
    /// Room for `rows` rows carrying `payload_bytes` bytes in all, so that the buffer is
    /// allocated once.
    pub fn with_capacity(rows: usize, payload_bytes: usize) -> Self {
        // Per row: the field count, five lengths and four BIGINTs.
        let overhead = 2 + 5 * 4 + 4 * 8;
        let mut data =
            Vec::with_capacity(HEADER.len() + rows * overhead + payload_bytes + TRAILER.len());
        data.extend_from_slice(HEADER);
        MessageRows { data, rows: 0 }
    }

    /// Adds one message. A payload is at most the broker's body limit, far below the 1 GiB a
    /// field can hold.
    pub fn push(
        &mut self,
        topic_id: i64,
        log_offset: i64,
        producer_id: i64,
        stored_ms: i64,
        payload: &[u8],
    ) {
        self.data.extend_from_slice(&FIELDS.to_be_bytes());
        for value in [topic_id, log_offset, producer_id, stored_ms] {
            self.data.extend_from_slice(&8i32.to_be_bytes());
            self.data.extend_from_slice(&value.to_be_bytes());
        }
        let length = i32::try_from(payload.len()).expect("a payload is far below 2 GiB");
        self.data.extend_from_slice(&length.to_be_bytes());
        self.data.extend_from_slice(payload);
        self.rows += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The bytes to send: the rows and the trailer.
    pub fn finish(mut self) -> Vec<u8> {
        self.data.extend_from_slice(&TRAILER);
        self.data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_postgres_binary_copy() {
        let mut rows = MessageRows::with_capacity(1, 2);
        assert!(rows.is_empty());
        rows.push(7, 1 << 40, 3, -1, b"hi");
        assert!(!rows.is_empty());
        let mut expected: Vec<u8> = b"PGCOPY\n\xff\r\n\0".to_vec();
        expected.extend([0, 0, 0, 0, 0, 0, 0, 0]); // flags, header extension length
        expected.extend([0, 5]); // five fields
        expected.extend([0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 7]);
        expected.extend([0, 0, 0, 8, 0, 0, 1, 0, 0, 0, 0, 0]);
        expected.extend([0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 3]);
        expected.extend([0, 0, 0, 8, 255, 255, 255, 255, 255, 255, 255, 255]);
        expected.extend([0, 0, 0, 2, b'h', b'i']);
        expected.extend([255, 255]); // the trailer
        assert_eq!(rows.finish(), expected);
    }
}

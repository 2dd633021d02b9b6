//! How the client framed its request body, which is how it goes upstream, whichever client
//! carries it.

use actix_web::http::header::{self, HeaderMap};

/// How the client framed its request body, which is how it goes upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestBody {
    Sized(u64),
    Chunked,
    None,
}

impl RequestBody {
    pub fn of(headers: &HeaderMap) -> Self {
        if let Some(length) = crate::headers::content_length(headers) {
            RequestBody::Sized(length)
        } else if headers.contains_key(header::TRANSFER_ENCODING) {
            RequestBody::Chunked
        } else {
            RequestBody::None
        }
    }
}

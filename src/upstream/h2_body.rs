//! The request body of an HTTP/2 upstream stream, as hyper takes it: the client's upload,
//! chunk by chunk, from the pump that reads it (see `h2`).

use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::web::Bytes;
use hyper::body::{Frame, SizeHint};
use tokio::sync::mpsc;

/// The request body as hyper takes it (its connection tasks need it `Send`): the client's
/// chunks handed over one at a time by the pump, so no more than one chunk waits between the
/// client and the upstream. The pump reads the client's upload, so it runs where the request
/// handler runs (the upload wakes one task only): beside the wait for the answer's head, then
/// inside the answer's body.
pub(super) struct OutgoingBody {
    pub(super) chunks: Option<mpsc::Receiver<Result<Bytes, BodyCut>>>,
    pub(super) length: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
#[error("the request body failed before its end")]
pub(super) struct BodyCut;

impl hyper::body::Body for OutgoingBody {
    type Data = Bytes;
    type Error = BodyCut;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyCut>>> {
        let Some(chunks) = self.chunks.as_mut() else {
            return Poll::Ready(None);
        };
        match chunks.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(chunk)) => Poll::Ready(Some(chunk.map(Frame::data))),
            Poll::Ready(None) => {
                self.chunks = None;
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_none()
    }

    /// An exact size declares `content-length` upstream, as the client declared it.
    fn size_hint(&self) -> SizeHint {
        match self.length {
            Some(length) => SizeHint::with_exact(length),
            None => SizeHint::default(),
        }
    }
}

//! How a request stream ended: a clean half-close (`END_STREAM`) or an abrupt end
//! (`RST_STREAM`, a transport error).
//!
//! The session needs the difference (API.md: "Client cancel is an abrupt end"), and tonic
//! hides it: its decoder reports a request body error with code `CANCELLED` (what a
//! client's `RST_STREAM(CANCEL)` becomes: grpc-java, grpc-go, grpcio and grpc-web send it
//! on `cancel()`) as a clean end of the stream. So [`EndAware`] wraps a service and its
//! request bodies: the body records how it ended in a [`RequestEnd`] that it puts in the
//! request's extensions, where the session reads it when its inbound stream stops.

use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http_body::{Body as HttpBody, Frame, SizeHint};
use tonic::body::Body;
use tonic::codegen::http::{Request, Response};
use tonic::server::NamedService;
use tower_service::Service;

const OPEN: u8 = 0;
const CLEAN: u8 = 1;
const ABRUPT: u8 = 2;

/// How a request body ended, as far as it has been read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Not ended yet (or dropped without an end being read).
    Open,
    /// The client ended its stream (`END_STREAM`).
    Clean,
    /// The stream was reset or the connection failed.
    Abrupt,
}

/// Shared between a request body and whoever reads the request (cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct RequestEnd(Arc<AtomicU8>);

impl RequestEnd {
    pub fn ending(&self) -> Ending {
        match self.0.load(Ordering::Acquire) {
            CLEAN => Ending::Clean,
            ABRUPT => Ending::Abrupt,
            _ => Ending::Open,
        }
    }

    /// Records a clean end (a transport other than HTTP/2 telling its own ends apart).
    pub fn record_clean(&self) {
        self.record(CLEAN);
    }

    /// Records an abrupt end.
    pub fn record_abrupt(&self) {
        self.record(ABRUPT);
    }

    /// The first end recorded wins (a reset after a clean end changes nothing).
    fn record(&self, ending: u8) {
        let _ = self
            .0
            .compare_exchange(OPEN, ending, Ordering::AcqRel, Ordering::Acquire);
    }
}

/// A request body that records how it ended.
struct Tracked<B> {
    inner: B,
    end: RequestEnd,
}

impl<B> HttpBody for Tracked<B>
where
    B: HttpBody + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &polled {
            None => self.end.record(CLEAN),
            Some(Err(_)) => self.end.record(ABRUPT),
            Some(Ok(_)) => {
                if self.inner.is_end_stream() {
                    self.end.record(CLEAN);
                }
            }
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Wraps a gRPC service so that each request carries a [`RequestEnd`] in its extensions.
#[derive(Debug, Clone)]
pub struct EndAware<S>(pub S);

impl<S: NamedService> NamedService for EndAware<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<Request<Body>> for EndAware<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let end = RequestEnd::default();
        let (mut parts, body) = request.into_parts();
        parts.extensions.insert(end.clone());
        let body = Body::new(Tracked { inner: body, end });
        self.0.call(Request::from_parts(parts, body))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::convert::Infallible;

    use bytes::Bytes;

    use super::*;

    /// A body that yields the given frames, then an error or the end.
    struct Scripted {
        frames: VecDeque<Bytes>,
        then_error: bool,
    }

    impl HttpBody for Scripted {
        type Data = Bytes;
        type Error = tonic::Status;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
            Poll::Ready(match self.frames.pop_front() {
                Some(data) => Some(Ok(Frame::data(data))),
                None if self.then_error => {
                    self.then_error = false;
                    Some(Err(tonic::Status::cancelled("reset by the client")))
                }
                None => None,
            })
        }
    }

    async fn read_to_end(then_error: bool) -> (Ending, Ending) {
        let end = RequestEnd::default();
        let mut body = Tracked {
            inner: Scripted {
                frames: VecDeque::from([Bytes::from_static(b"a")]),
                then_error,
            },
            end: end.clone(),
        };
        let mut first = None;
        loop {
            let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
            first.get_or_insert(end.ending());
            match frame {
                Some(Ok(_)) => continue,
                _ => break,
            }
        }
        (first.unwrap(), end.ending())
    }

    #[tokio::test]
    async fn a_reset_is_abrupt_and_an_end_stream_is_clean() {
        assert_eq!(read_to_end(true).await, (Ending::Open, Ending::Abrupt));
        assert_eq!(read_to_end(false).await, (Ending::Open, Ending::Clean));
    }

    #[test]
    fn the_first_end_wins() {
        let end = RequestEnd::default();
        end.record(CLEAN);
        end.record(ABRUPT);
        assert_eq!(end.ending(), Ending::Clean);
    }

    #[tokio::test]
    async fn the_service_hands_the_end_to_the_request() {
        /// Answers whether the request carried a `RequestEnd`, in the response's extensions.
        #[derive(Clone)]
        struct Probe;
        impl Service<Request<Body>> for Probe {
            type Response = Response<Body>;
            type Error = Infallible;
            type Future = std::future::Ready<Result<Response<Body>, Infallible>>;
            fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
                Poll::Ready(Ok(()))
            }
            fn call(&mut self, request: Request<Body>) -> Self::Future {
                let mut response = Response::new(Body::empty());
                if let Some(end) = request.extensions().get::<RequestEnd>() {
                    response.extensions_mut().insert(end.clone());
                }
                std::future::ready(Ok(response))
            }
        }
        let response = EndAware(Probe)
            .call(Request::new(Body::empty()))
            .await
            .unwrap();
        let end = response.extensions().get::<RequestEnd>();
        assert_eq!(end.map(RequestEnd::ending), Some(Ending::Open));
    }
}

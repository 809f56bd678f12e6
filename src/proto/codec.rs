//! The protobuf codec every generated client and server uses: tonic's prost codec with small
//! starting buffers.
//!
//! tonic gives each stream an 8 KiB encode buffer and an 8 KiB decode buffer up front. A
//! presence stream is idle almost all of the time and its frames are tens of bytes (a
//! heartbeat, one user's update), so those 16 KiB were most of an idle session's memory.
//! The buffers still grow on demand for a large frame (a 1,000-id `GetPresence` answer), so
//! only the starting size changes, never what can be sent.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Starting size of a stream's encode and decode buffers: a Welcome with a typical watch
/// snapshot fits; larger frames grow the buffer.
const BUFFER_SIZE: usize = 256;
/// tonic's default: how much encoded output is gathered before it is handed to HTTP/2.
const YIELD_THRESHOLD: usize = 32 * 1024;

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD)
}

/// A prost codec with [`BUFFER_SIZE`] starting buffers (see the module docs).
#[derive(Debug, Clone)]
pub struct LeanCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for LeanCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for LeanCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(settings())
    }
}

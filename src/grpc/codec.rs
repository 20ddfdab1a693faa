//! The protobuf codec of every celeritas service: prost's, except that a message that does not
//! decode is the sender's mistake (INVALID_ARGUMENT, saying why), not the server's
//! (prost's codec answers INTERNAL). On a worker stream the same status ends the stream, so the
//! worker's log says what was wrong with what it sent.

use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// prost's codec with decode errors answered as INVALID_ARGUMENT.
#[derive(Debug, Clone)]
pub struct WireCodec<T, U> {
    _types: std::marker::PhantomData<(T, U)>,
}

impl<T, U> Default for WireCodec<T, U> {
    fn default() -> Self {
        Self {
            _types: std::marker::PhantomData,
        }
    }
}

impl<T, U> Codec for WireCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = WireDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        WireDecoder(ProstDecoder::default())
    }
}

/// prost's decoder, its errors answered as INVALID_ARGUMENT.
#[derive(Debug)]
pub struct WireDecoder<U>(ProstDecoder<U>);

impl<U: prost::Message + Default> Decoder for WireDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|status| {
            Status::invalid_argument(format!(
                "the message is not valid protobuf for {}: {}",
                std::any::type_name::<U>()
                    .rsplit("::")
                    .next()
                    .unwrap_or("it"),
                status.message()
            ))
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

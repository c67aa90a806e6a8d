//! Framing: bytes <-> milter packets.
//!
//! A packet is a `u32` big-endian length, one code byte, and `length - 1` payload bytes; the
//! length counts the code byte but not itself (protocol notes §1). This module owns only that
//! layer: it knows nothing about what the code bytes mean (see `command.rs` and `reply.rs`).
//!
//! The decoder is sans-I/O: feed it whatever chunks the socket produced and it answers
//! [`Decoded::Incomplete`] or one [`Frame`]. The length is checked against the configured cap
//! *before* any buffer is grown, so a hostile peer announcing 4 GiB costs nothing (pitfall 8:
//! `GET ` read as a length is 1 195 725 856). Postfix sends one HEADER packet per (folded)
//! header, which can exceed 64 KiB, hence a default cap of 2 MiB rather than libmilter's 64 KiB.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Default maximum packet length (code byte + payload): 2 MiB.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 2 * 1024 * 1024;

/// Size of the length prefix.
pub const LENGTH_PREFIX: usize = 4;

/// One packet: its code byte and payload (without the length prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub code: u8,
    pub payload: Bytes,
}

impl Frame {
    /// A frame from a code and a payload.
    pub fn new(code: u8, payload: impl Into<Bytes>) -> Frame {
        Frame {
            code,
            payload: payload.into(),
        }
    }

    /// Append this frame's wire form to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        encode_frame(self.code, &self.payload, dst);
    }
}

/// Why a byte stream is not a valid packet sequence. Every variant means the stream cannot be
/// resynchronised: the connection must be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A length of 0 leaves no room for the code byte.
    #[error("packet length 0 (a packet needs at least its code byte)")]
    ZeroLength,
    /// The announced length exceeds the configured cap.
    #[error("packet length {len} exceeds the maximum of {max} bytes")]
    TooLarge { len: u64, max: usize },
}

/// What the decoder found in its buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// More bytes are needed; nothing was consumed.
    Incomplete,
    /// One complete packet; its bytes were consumed from the buffer.
    Frame(Frame),
}

/// Sans-I/O frame decoder with a size cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameDecoder {
    max_frame_size: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE)
    }
}

impl FrameDecoder {
    /// A decoder refusing packets whose length (code byte + payload) exceeds `max_frame_size`.
    /// A cap below 1 is raised to 1 so bare commands always fit.
    pub fn new(max_frame_size: usize) -> FrameDecoder {
        FrameDecoder {
            max_frame_size: max_frame_size.max(1),
        }
    }

    /// The configured cap.
    pub fn max_frame_size(&self) -> usize {
        self.max_frame_size
    }

    /// Take one packet off the front of `buf`, if a whole one is there. On error the buffer
    /// is left as it was; the caller must close the stream.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Decoded, FrameError> {
        if buf.len() < LENGTH_PREFIX {
            return Ok(Decoded::Incomplete);
        }
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        if len == 0 {
            return Err(FrameError::ZeroLength);
        }
        let len_usize = match usize::try_from(len) {
            Ok(l) if l <= self.max_frame_size => l,
            _ => {
                return Err(FrameError::TooLarge {
                    len: u64::from(len),
                    max: self.max_frame_size,
                });
            }
        };
        let total = LENGTH_PREFIX + len_usize;
        if buf.len() < total {
            // Reserve only what the (already validated) packet needs.
            buf.reserve(total - buf.len());
            return Ok(Decoded::Incomplete);
        }
        buf.advance(LENGTH_PREFIX);
        let mut body = buf.split_to(len_usize);
        let code = body[0];
        body.advance(1);
        Ok(Decoded::Frame(Frame {
            code,
            payload: body.freeze(),
        }))
    }
}

/// Append one packet to `dst`. Payloads longer than `u32::MAX - 1` cannot be framed; callers
/// never build those (body replacement is chunked, everything else is small).
pub fn encode_frame(code: u8, payload: &[u8], dst: &mut BytesMut) {
    let len = u32::try_from(payload.len() + 1).unwrap_or(u32::MAX);
    dst.reserve(LENGTH_PREFIX + 1 + payload.len());
    dst.put_u32(len);
    dst.put_u8(code);
    dst.put_slice(payload);
}

/// Errors from the tokio codec: framing or I/O.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl tokio_util::codec::Decoder for FrameDecoder {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        match FrameDecoder::decode(self, src)? {
            Decoded::Incomplete => Ok(None),
            Decoded::Frame(f) => Ok(Some(f)),
        }
    }
}

impl tokio_util::codec::Encoder<Frame> for FrameDecoder {
    type Error = CodecError;

    fn encode(&mut self, item: Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        item.encode(dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> (Vec<u8>, Vec<Frame>) {
        let frames = vec![
            Frame::new(b'O', vec![0, 0, 0, 6, 0, 0, 1, 0xff, 0, 0x1f, 0xff, 0xff]),
            Frame::new(b'D', b"C{daemon_name}\0mx\0".to_vec()),
            Frame::new(b'C', b"[127.0.0.1]\x004\x8c\x34127.0.0.1\0".to_vec()),
            Frame::new(b'T', Vec::new()),
            Frame::new(b'B', vec![b'x'; 300]),
            Frame::new(b'E', Vec::new()),
        ];
        let mut buf = BytesMut::new();
        for f in &frames {
            f.encode(&mut buf);
        }
        (buf.to_vec(), frames)
    }

    #[test]
    fn every_chunk_size_yields_the_same_frames() {
        let (bytes, frames) = stream();
        let dec = FrameDecoder::default();
        for chunk in 1..=bytes.len() {
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for piece in bytes.chunks(chunk) {
                buf.extend_from_slice(piece);
                while let Decoded::Frame(f) = dec.decode(&mut buf).unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got, frames, "chunk size {chunk}");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn big_frames_over_64k_pass_in_any_chunking() {
        let big = Frame::new(b'L', vec![b'v'; 100_000]);
        let mut bytes = BytesMut::new();
        big.encode(&mut bytes);
        let dec = FrameDecoder::default();
        for chunk in [1usize, 7, 4096, 65_536, 100_005] {
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for piece in bytes.chunks(chunk) {
                buf.extend_from_slice(piece);
                while let Decoded::Frame(f) = dec.decode(&mut buf).unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got, vec![big.clone()]);
        }
    }

    #[test]
    fn zero_length_is_an_error() {
        let mut buf = BytesMut::from(&[0u8, 0, 0, 0, b'c'][..]);
        assert_eq!(
            FrameDecoder::default().decode(&mut buf),
            Err(FrameError::ZeroLength)
        );
    }

    #[test]
    fn oversized_is_refused_before_allocating() {
        let mut buf = BytesMut::from(&b"GET / HTTP/1.0\r\n"[..]);
        let err = FrameDecoder::default().decode(&mut buf).unwrap_err();
        assert_eq!(
            err,
            FrameError::TooLarge {
                len: 0x4745_5420,
                max: DEFAULT_MAX_FRAME_SIZE
            }
        );
        assert!(buf.capacity() < 1024);
        let mut buf = BytesMut::from(&[0u8, 0, 0, 11, b'B'][..]);
        assert!(matches!(
            FrameDecoder::new(10).decode(&mut buf),
            Err(FrameError::TooLarge { len: 11, max: 10 })
        ));
        // Exactly at the cap is fine.
        let mut buf = BytesMut::from(&[0u8, 0, 0, 10, b'B', 1, 2, 3, 4, 5, 6, 7, 8, 9][..]);
        assert!(matches!(
            FrameDecoder::new(10).decode(&mut buf),
            Ok(Decoded::Frame(_))
        ));
    }

    #[test]
    fn truncated_is_incomplete_not_an_error() {
        let (bytes, _) = stream();
        let dec = FrameDecoder::default();
        for cut in 0..40 {
            let mut buf = BytesMut::from(&bytes[..cut.min(bytes.len())]);
            let mut n = 0;
            while let Decoded::Frame(_) = dec.decode(&mut buf).unwrap() {
                n += 1;
            }
            assert!(n <= 2);
        }
    }

    #[test]
    fn encoder_matches_the_notes() {
        let mut buf = BytesMut::new();
        encode_frame(b'c', &[], &mut buf);
        assert_eq!(&buf[..], &[0, 0, 0, 1, b'c']);
    }

    #[test]
    fn tokio_codec_round_trip() {
        use tokio_util::codec::{Decoder, Encoder};
        let mut c = FrameDecoder::default();
        let mut buf = BytesMut::new();
        c.encode(Frame::new(b'h', b"X\0y\0".to_vec()), &mut buf)
            .unwrap();
        let f = Decoder::decode(&mut c, &mut buf).unwrap().unwrap();
        assert_eq!(f, Frame::new(b'h', b"X\0y\0".to_vec()));
        assert!(Decoder::decode(&mut c, &mut buf).unwrap().is_none());
    }
}

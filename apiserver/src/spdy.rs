//! SPDY/3.1 framing, the server side of what Kubernetes' port-forward clients speak (kubectl's
//! `spdystream`, plain over an upgraded HTTP/1.1 connection or tunnelled in WebSocket binary
//! messages). No maintained Rust crate implements SPDY, so this is the part of the protocol those
//! clients use, kept small:
//!
//! - control frames (first bit set): version 3, a 16-bit type, flags, a 24-bit length; the ones
//!   read are SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS and
//!   WINDOW_UPDATE (the others are skipped, as the specification says);
//! - data frames: a 31-bit stream id, flags (FIN), a 24-bit length, the bytes;
//! - header blocks: a count, then length-prefixed names and values, compressed as one zlib
//!   stream per direction and connection with the specification's preset dictionary.
//!
//! Every length is bounded ([`MAX_FRAME`], [`MAX_HEADER_BLOCK`]); anything malformed is an error
//! that ends the connection, never a panic.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

/// The protocol version.
pub const VERSION: u16 = 3;
/// Largest frame payload accepted (the 24-bit field allows 16 MiB; clients write 32 KiB).
pub const MAX_FRAME: usize = 1 << 20;
/// Largest header block once decompressed.
pub const MAX_HEADER_BLOCK: usize = 64 * 1024;
/// Most headers in one block.
const MAX_HEADERS: u32 = 128;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;
/// The FIN flag (control and data frames alike).
const FLAG_FIN: u8 = 0x01;

/// RST_STREAM status: a protocol error on the stream.
pub const PROTOCOL_ERROR: u32 = 1;
/// RST_STREAM status: no such stream.
pub const INVALID_STREAM: u32 = 2;
/// RST_STREAM status: the stream was refused (a limit).
pub const REFUSED_STREAM: u32 = 3;
/// RST_STREAM status: the stream is cancelled.
pub const CANCEL: u32 = 5;

/// The preset dictionary of SPDY/3 header compression (the draft specification's §2.6.10.1):
/// length-prefixed header names and values, then a run of common value text.
pub fn dictionary() -> &'static [u8] {
    static DICT: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    DICT.get_or_init(|| {
        const WORDS: [&str; 65] = [
            "options",
            "head",
            "post",
            "put",
            "delete",
            "trace",
            "accept",
            "accept-charset",
            "accept-encoding",
            "accept-language",
            "accept-ranges",
            "age",
            "allow",
            "authorization",
            "cache-control",
            "connection",
            "content-base",
            "content-encoding",
            "content-language",
            "content-length",
            "content-location",
            "content-md5",
            "content-range",
            "content-type",
            "date",
            "etag",
            "expect",
            "expires",
            "from",
            "host",
            "if-match",
            "if-modified-since",
            "if-none-match",
            "if-range",
            "if-unmodified-since",
            "last-modified",
            "location",
            "max-forwards",
            "pragma",
            "proxy-authenticate",
            "proxy-authorization",
            "range",
            "referer",
            "retry-after",
            "server",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "user-agent",
            "vary",
            "via",
            "warning",
            "www-authenticate",
            "method",
            "get",
            "status",
            "200 OK",
            "version",
            "HTTP/1.1",
            "url",
            "public",
            "set-cookie",
            "keep-alive",
            "origin",
        ];
        const TAIL: &str = concat!(
            "100101201202205206300302303304305306307402405406407408409410411412413414415416417",
            "502504505203 Non-Authoritative Information204 No Content301 Moved Permanently",
            "400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error",
            "501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct ",
            "Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,",
            "image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,",
            "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8",
            "charset=iso-8859-1,utf-,*,enq=0."
        );
        let mut d = Vec::with_capacity(1423);
        for w in WORDS {
            d.extend_from_slice(&(w.len() as u32).to_be_bytes());
            d.extend_from_slice(w.as_bytes());
        }
        d.extend_from_slice(TAIL.as_bytes());
        d
    })
}

/// A header block: (name, value) pairs, names lowercase.
pub type Headers = Vec<(String, String)>;

/// A frame.
#[derive(Clone, Debug, PartialEq)]
pub enum Frame {
    /// A new stream the peer opens.
    SynStream {
        /// Stream id.
        id: u32,
        /// The peer sends nothing on it.
        fin: bool,
        /// Its headers.
        headers: Headers,
    },
    /// The answer to a SYN_STREAM.
    SynReply {
        /// Stream id.
        id: u32,
        /// The sender sends nothing more on it.
        fin: bool,
        /// Its headers.
        headers: Headers,
    },
    /// A stream ends abnormally.
    RstStream {
        /// Stream id.
        id: u32,
        /// Why (`PROTOCOL_ERROR`, `CANCEL`, ...).
        status: u32,
    },
    /// A ping (answered with the same id).
    Ping(u32),
    /// The peer ends the connection.
    GoAway {
        /// The last stream it accepted.
        last_good: u32,
        /// Why.
        status: u32,
    },
    /// Data on a stream.
    Data {
        /// Stream id.
        id: u32,
        /// The sender's last data on the stream.
        fin: bool,
        /// The bytes.
        data: Bytes,
    },
    /// Something this side reads and ignores (SETTINGS, HEADERS, WINDOW_UPDATE, unknown types).
    Ignored,
}

/// Why a connection's input is unusable.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SpdyError {
    /// A frame over [`MAX_FRAME`].
    #[error("a SPDY frame of {0} bytes is over the limit")]
    TooLarge(usize),
    /// A control frame of another version.
    #[error("unsupported SPDY version {0}")]
    Version(u16),
    /// A frame that does not parse.
    #[error("malformed SPDY frame: {0}")]
    Malformed(&'static str),
    /// A header block that does not decompress.
    #[error("SPDY header block: {0}")]
    Compression(String),
    /// The connection failed.
    #[error("{0}")]
    Io(String),
}

impl From<std::io::Error> for SpdyError {
    fn from(e: std::io::Error) -> Self {
        SpdyError::Io(e.to_string())
    }
}

/// Reads frames, decompressing header blocks with the connection's inflater.
pub struct Reader {
    z: Decompress,
}

impl Default for Reader {
    fn default() -> Self {
        Reader {
            z: Decompress::new(true),
        }
    }
}

impl Reader {
    fn inflate(&mut self, mut input: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let mut out = Vec::with_capacity(1024);
        loop {
            if out.len() == out.capacity() {
                if out.len() >= MAX_HEADER_BLOCK {
                    return Err(SpdyError::Compression("over the size limit".into()));
                }
                out.reserve(4096);
            }
            let (in_before, out_before) = (self.z.total_in(), out.len());
            let r = self
                .z
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            let used = usize::try_from(self.z.total_in() - in_before).unwrap_or(input.len());
            input = &input[used.min(input.len())..];
            match r {
                Ok(_) => {
                    // Done when all input is in and the output had room to spare.
                    if input.is_empty() && out.len() < out.capacity() {
                        return Ok(out);
                    }
                    if used == 0 && out.len() == out_before && out.len() < out.capacity() {
                        return Err(SpdyError::Compression("no progress".into()));
                    }
                }
                Err(e) if e.needs_dictionary().is_some() => {
                    self.z
                        .set_dictionary(dictionary())
                        .map_err(|e| SpdyError::Compression(e.to_string()))?;
                }
                Err(e) => return Err(SpdyError::Compression(e.to_string())),
            }
        }
    }

    fn headers(&mut self, block: &[u8]) -> Result<Headers, SpdyError> {
        let raw = self.inflate(block)?;
        parse_headers(&raw)
    }
}

fn take_u32(b: &mut &[u8]) -> Result<u32, SpdyError> {
    if b.len() < 4 {
        return Err(SpdyError::Malformed("truncated"));
    }
    Ok(b.get_u32())
}

fn parse_headers(mut b: &[u8]) -> Result<Headers, SpdyError> {
    let n = take_u32(&mut b)?;
    if n > MAX_HEADERS {
        return Err(SpdyError::Malformed("too many headers"));
    }
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let mut field = || -> Result<String, SpdyError> {
            let len = take_u32(&mut b)? as usize;
            if len > b.len() {
                return Err(SpdyError::Malformed("truncated header"));
            }
            let (s, rest) = b.split_at(len);
            b = rest;
            String::from_utf8(s.to_vec()).map_err(|_| SpdyError::Malformed("header not UTF-8"))
        };
        let name = field()?.to_ascii_lowercase();
        let value = field()?;
        out.push((name, value));
    }
    Ok(out)
}

impl tokio_util::codec::Decoder for Reader {
    type Item = Frame;
    type Error = SpdyError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, SpdyError> {
        if src.len() < 8 {
            return Ok(None);
        }
        let len = (usize::from(src[5]) << 16) | (usize::from(src[6]) << 8) | usize::from(src[7]);
        if len > MAX_FRAME {
            return Err(SpdyError::TooLarge(len));
        }
        if src.len() < 8 + len {
            src.reserve(8 + len - src.len());
            return Ok(None);
        }
        let head = src.split_to(8);
        let body = src.split_to(len).freeze();
        let flags = head[4];
        let fin = flags & FLAG_FIN != 0;
        if head[0] & 0x80 == 0 {
            let id = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
            return Ok(Some(Frame::Data {
                id,
                fin,
                data: body,
            }));
        }
        let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
        if version != VERSION {
            return Err(SpdyError::Version(version));
        }
        let kind = u16::from_be_bytes([head[2], head[3]]);
        let mut b = &body[..];
        let id31 = |b: &mut &[u8]| take_u32(b).map(|v| v & 0x7fff_ffff);
        Ok(Some(match kind {
            SYN_STREAM => {
                let id = id31(&mut b)?;
                let _associated = take_u32(&mut b)?;
                if b.len() < 2 {
                    return Err(SpdyError::Malformed("truncated SYN_STREAM"));
                }
                b.advance(2);
                let headers = self.headers(b)?;
                Frame::SynStream { id, fin, headers }
            }
            SYN_REPLY => {
                let id = id31(&mut b)?;
                let headers = self.headers(b)?;
                Frame::SynReply { id, fin, headers }
            }
            HEADERS => {
                // Read to keep the inflater in step; nothing uses them.
                let _id = id31(&mut b)?;
                self.headers(b)?;
                Frame::Ignored
            }
            RST_STREAM => Frame::RstStream {
                id: id31(&mut b)?,
                status: take_u32(&mut b)?,
            },
            PING => Frame::Ping(take_u32(&mut b)?),
            GOAWAY => Frame::GoAway {
                last_good: id31(&mut b)?,
                status: take_u32(&mut b).unwrap_or(0),
            },
            SETTINGS | WINDOW_UPDATE => Frame::Ignored,
            _ => Frame::Ignored,
        }))
    }
}

/// Writes frames, compressing header blocks with the connection's deflater.
pub struct Writer {
    z: Compress,
}

impl Default for Writer {
    fn default() -> Self {
        let mut z = Compress::new(Compression::default(), true);
        // A fresh stream takes the dictionary (its header then names it, as peers expect).
        let _ = z.set_dictionary(dictionary());
        Writer { z }
    }
}

impl Writer {
    fn deflate(&mut self, mut input: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let mut out = Vec::with_capacity(input.len() + 64);
        loop {
            if out.len() == out.capacity() {
                out.reserve(1024);
            }
            let before = self.z.total_in();
            self.z
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(|e| SpdyError::Compression(e.to_string()))?;
            let used = usize::try_from(self.z.total_in() - before).unwrap_or(input.len());
            input = &input[used.min(input.len())..];
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }

    fn header_block(&mut self, headers: &Headers) -> Result<Vec<u8>, SpdyError> {
        let mut raw = Vec::new();
        raw.put_u32(headers.len() as u32);
        for (k, v) in headers {
            raw.put_u32(k.len() as u32);
            raw.put_slice(k.as_bytes());
            raw.put_u32(v.len() as u32);
            raw.put_slice(v.as_bytes());
        }
        self.deflate(&raw)
    }
}

fn control(dst: &mut BytesMut, kind: u16, flags: u8, body: &[u8]) {
    dst.put_u16(0x8000 | VERSION);
    dst.put_u16(kind);
    dst.put_u8(flags);
    let len = body.len() as u32;
    dst.put_slice(&len.to_be_bytes()[1..]);
    dst.put_slice(body);
}

impl tokio_util::codec::Encoder<Frame> for Writer {
    type Error = SpdyError;

    fn encode(&mut self, f: Frame, dst: &mut BytesMut) -> Result<(), SpdyError> {
        let fin_flag = |fin: bool| if fin { FLAG_FIN } else { 0 };
        match f {
            Frame::SynStream { id, fin, headers } => {
                let mut b = Vec::new();
                b.put_u32(id & 0x7fff_ffff);
                b.put_u32(0);
                b.put_u16(0);
                b.extend(self.header_block(&headers)?);
                control(dst, SYN_STREAM, fin_flag(fin), &b);
            }
            Frame::SynReply { id, fin, headers } => {
                let mut b = Vec::new();
                b.put_u32(id & 0x7fff_ffff);
                b.extend(self.header_block(&headers)?);
                control(dst, SYN_REPLY, fin_flag(fin), &b);
            }
            Frame::RstStream { id, status } => {
                let mut b = Vec::new();
                b.put_u32(id & 0x7fff_ffff);
                b.put_u32(status);
                control(dst, RST_STREAM, 0, &b);
            }
            Frame::Ping(id) => control(dst, PING, 0, &id.to_be_bytes()),
            Frame::GoAway { last_good, status } => {
                let mut b = Vec::new();
                b.put_u32(last_good & 0x7fff_ffff);
                b.put_u32(status);
                control(dst, GOAWAY, 0, &b);
            }
            Frame::Data { id, fin, data } => {
                if data.len() > MAX_FRAME {
                    return Err(SpdyError::TooLarge(data.len()));
                }
                dst.put_u32(id & 0x7fff_ffff);
                dst.put_u8(fin_flag(fin));
                let len = data.len() as u32;
                dst.put_slice(&len.to_be_bytes()[1..]);
                dst.put_slice(&data);
            }
            Frame::Ignored => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::codec::{Decoder, Encoder};

    #[test]
    fn the_dictionary_is_the_specifications() {
        // Its length and Adler-32, as every peer computes them.
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        let (mut a, mut b) = (1u32, 0u32);
        for &x in d {
            a = (a + u32::from(x)) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!((b << 16) | a, 0xe3c6_a7c2);
    }

    #[test]
    fn frames_survive_a_round_trip_with_one_compression_stream_per_direction() {
        let (mut w, mut r) = (Writer::default(), Reader::default());
        let frames = vec![
            Frame::SynStream {
                id: 1,
                fin: false,
                headers: vec![
                    ("streamtype".into(), "error".into()),
                    ("port".into(), "8080".into()),
                    ("requestid".into(), "0".into()),
                ],
            },
            Frame::SynStream {
                id: 3,
                fin: false,
                headers: vec![("streamtype".into(), "data".into())],
            },
            Frame::SynReply {
                id: 3,
                fin: false,
                headers: vec![],
            },
            Frame::Data {
                id: 3,
                fin: true,
                data: Bytes::from_static(b"hello"),
            },
            Frame::RstStream {
                id: 1,
                status: CANCEL,
            },
            Frame::Ping(7),
            Frame::GoAway {
                last_good: 3,
                status: 0,
            },
        ];
        let mut buf = BytesMut::new();
        for f in frames.clone() {
            w.encode(f, &mut buf).unwrap();
        }
        // Fed a byte at a time: frames come out only once whole.
        let mut got = Vec::new();
        let mut feed = BytesMut::new();
        for b in buf {
            feed.put_u8(b);
            while let Some(f) = r.decode(&mut feed).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let mut r = Reader::default();
        // Over the size limit.
        let mut b = BytesMut::from(&[0x80, 3, 0, 1, 0, 0xff, 0xff, 0xff][..]);
        assert!(matches!(r.decode(&mut b), Err(SpdyError::TooLarge(_))));
        // Another version.
        let mut b = BytesMut::from(&[0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1][..]);
        assert_eq!(r.decode(&mut b), Err(SpdyError::Version(2)));
        // A SYN_STREAM whose header block is not zlib.
        let mut b = BytesMut::from(
            &[
                0x80, 3, 0, 1, 0, 0, 0, 14, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4,
            ][..],
        );
        assert!(matches!(r.decode(&mut b), Err(SpdyError::Compression(_))));
        // A truncated RST_STREAM.
        let mut b = BytesMut::from(&[0x80, 3, 0, 3, 0, 0, 0, 2, 0, 0][..]);
        assert!(matches!(r.decode(&mut b), Err(SpdyError::Malformed(_))));
        // Header counts and lengths past the block.
        assert!(parse_headers(&[0, 0, 0, 1, 0, 0, 0, 9, b'a']).is_err());
        assert!(parse_headers(&[0xff, 0xff, 0xff, 0xff]).is_err());
        // Unknown control types are skipped.
        let mut b = BytesMut::from(&[0x80, 3, 0, 42, 0, 0, 0, 1, 9][..]);
        assert_eq!(r.decode(&mut b), Ok(Some(Frame::Ignored)));
    }
}

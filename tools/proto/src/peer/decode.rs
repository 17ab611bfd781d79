//! Decoding frames: [`decode_frame`] over a buffer, [`FrameDecoder`] over a stream.
//!
//! Order of checks, each before the next is trusted: the magic (as soon as its first byte
//! is there, so a stranger is turned away at once), the header CRC, version, kind, flags,
//! the payload length against [`FrameLimits`] and the kind's own range (all before waiting
//! for the payload), then the frame CRC, then the payload field by field, every count and
//! length against the bytes that remain before anything is allocated from it.

use super::error::{FrameFault, PeerError};
use super::frame::{
    check_batch, check_batch_count, check_file_chunk, check_file_name, check_frame_len,
    check_hold_ms, Ack, Batch, Batches, ErrorCode, ErrorFrame, FileChunk, FilesEnd, Frame,
    FrameKind, Heartbeat, Held, Hello, Hold, HoldEnded, Lacking, Proof, RebuildRequest, Refuse,
    RefuseReason, Release, Resync, MAX_FILE_NAME,
};
use super::{
    FrameLimits, BATCH_HEADER_LEN, FRAME_VERSION, HEADER_LEN, MAGIC, MAX_MESSAGE_BYTES, NONCE_LEN,
    PROOF_LEN, TRAILER_LEN,
};

/// What the front of a buffer holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A whole frame, `len` bytes long: drop them before decoding the next one.
    Frame {
        /// The frame.
        frame: Frame,
        /// Bytes it spans.
        len: usize,
    },
    /// Not a whole frame yet: at least `need` more bytes are needed.
    Incomplete {
        /// Bytes missing, at least.
        need: usize,
    },
}

/// A fault at a byte offset from the start of the frame.
type Fault = (usize, FrameFault);

/// Decodes one frame from the front of `buf`. Errors carry the offset from the start of
/// `buf`. Never panics, and allocates only for a frame whose bytes are all present and
/// checked, never more than a small multiple of them.
pub fn decode_frame(buf: &[u8], limits: &FrameLimits) -> Result<Decoded, PeerError> {
    decode_at(buf, limits).map_err(|(offset, fault)| PeerError::Frame {
        offset: offset as u64,
        fault,
    })
}

fn decode_at(buf: &[u8], limits: &FrameLimits) -> Result<Decoded, Fault> {
    let Some((kind, payload_len)) = check_header(buf, limits)? else {
        return Ok(Decoded::Incomplete {
            need: HEADER_LEN - buf.len(),
        });
    };
    let total = HEADER_LEN + payload_len + TRAILER_LEN;
    if buf.len() < total {
        return Ok(Decoded::Incomplete {
            need: total - buf.len(),
        });
    }
    let body_end = HEADER_LEN + payload_len;
    let stored = u32_le(&buf[body_end..total]);
    let computed = crc32c::crc32c(&buf[..body_end]);
    if stored != computed {
        return Err((0, FrameFault::CrcMismatch { stored, computed }));
    }
    let payload = Reader {
        buf: &buf[HEADER_LEN..body_end],
        pos: 0,
    };
    let frame =
        decode_payload(kind, payload, limits).map_err(|(at, fault)| (HEADER_LEN + at, fault))?;
    Ok(Decoded::Frame { frame, len: total })
}

/// Checks the header at the front of `buf`: its kind and payload length, or `None` if the
/// 16 header bytes are not all there yet.
fn check_header(buf: &[u8], limits: &FrameLimits) -> Result<Option<(FrameKind, usize)>, Fault> {
    // The first wrong byte of the magic, wherever the buffer ends: the error is the same
    // however the stream was cut.
    let have = buf.len().min(MAGIC.len());
    if let Some(i) = (0..have).find(|&i| buf[i] != MAGIC[i]) {
        return Err((
            i,
            FrameFault::BadMagic {
                found: buf[i],
                expected: MAGIC[i],
            },
        ));
    }
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let stored = u32_le(&buf[12..16]);
    let computed = crc32c::crc32c(&buf[..12]);
    if stored != computed {
        return Err((0, FrameFault::HeaderCrcMismatch { stored, computed }));
    }
    if buf[4] != FRAME_VERSION {
        return Err((
            4,
            FrameFault::UnsupportedVersion {
                found: buf[4],
                supported: FRAME_VERSION,
            },
        ));
    }
    let kind =
        FrameKind::from_code(buf[5]).ok_or((5, FrameFault::UnknownKind { found: buf[5] }))?;
    let flags = u16::from_le_bytes([buf[6], buf[7]]);
    if flags != 0 {
        return Err((6, FrameFault::ReservedFlags { found: flags }));
    }
    let len = u32_le(&buf[8..12]);
    check_frame_len(u64::from(len), limits).map_err(|f| (8, f))?;
    let (min, max) = kind.payload_range();
    if len < min || len > max {
        return Err((
            8,
            FrameFault::PayloadLength {
                kind,
                len,
                min,
                max,
            },
        ));
    }
    Ok(Some((kind, len as usize)))
}

fn decode_payload(
    kind: FrameKind,
    mut r: Reader<'_>,
    limits: &FrameLimits,
) -> Result<Frame, Fault> {
    let frame = match kind {
        FrameKind::Hello => Frame::Hello(read_hello(&mut r)?),
        FrameKind::Challenge => Frame::Challenge(read_hello(&mut r)?),
        FrameKind::Proof => Frame::Proof(Proof(r.array::<PROOF_LEN>("proof")?)),
        FrameKind::Welcome => Frame::Welcome(Proof(r.array::<PROOF_LEN>("proof")?)),
        FrameKind::Refuse => {
            let (code, message) = read_message(&mut r)?;
            Frame::Refuse(Refuse {
                reason: RefuseReason::from_code(code),
                message,
            })
        }
        FrameKind::Error => {
            let (code, message) = read_message(&mut r)?;
            Frame::Error(ErrorFrame {
                code: ErrorCode::from_code(code),
                message,
            })
        }
        FrameKind::Batches => Frame::Batches(read_batches(&mut r, limits)?),
        FrameKind::Ack => Frame::Ack(Ack {
            origin: r.u64("origin")?,
            durable_lsn: r.u64("durable_lsn")?,
        }),
        FrameKind::Heartbeat => Frame::Heartbeat(Heartbeat {
            origin: r.u64("origin")?,
            stamp: r.u64("stamp")?,
            last_origin_lsn: r.u64("last_origin_lsn")?,
        }),
        FrameKind::Resync => Frame::Resync(Resync {
            origin: r.u64("origin")?,
            last_good_lsn: r.u64("last_good_lsn")?,
        }),
        FrameKind::Rebuild => Frame::Rebuild(read_rebuild(&mut r)?),
        FrameKind::File => Frame::File(read_file(&mut r)?),
        FrameKind::FilesEnd => Frame::FilesEnd(FilesEnd {
            files: r.u32("files")?,
            bytes: r.u64("bytes")?,
            source_node: r.u64("source_node")?,
            source_timeline: r.u64("source_timeline")?,
            lost_node_mark: r.u64("lost_node_mark")?,
        }),
        FrameKind::Hold => {
            let mark = r.u64("mark")?;
            let at = r.pos;
            let max_ms = r.u32("max_ms")?;
            check_hold_ms(max_ms).map_err(|f| (at, f))?;
            Frame::Hold(Hold { mark, max_ms })
        }
        FrameKind::Held => Frame::Held(Held {
            cutoff: r.u64("cutoff")?,
            pending: r.u64("pending")?,
            granted: r.flag("granted")?,
        }),
        FrameKind::Release => Frame::Release(Release {
            reached: r.flag("reached")?,
        }),
        FrameKind::Lacking => Frame::Lacking(Lacking {
            origin: r.u64("origin")?,
            after: r.u64("after")?,
        }),
        FrameKind::HoldEnded => Frame::HoldEnded(HoldEnded {
            pause_us: r.u64("pause_us")?,
            writes_held: r.u64("writes_held")?,
            held_p50_us: r.u64("held_p50_us")?,
            held_max_us: r.u64("held_max_us")?,
        }),
    };
    let count = r.remaining();
    if count != 0 {
        return Err((r.pos, FrameFault::TrailingBytes { count }));
    }
    Ok(frame)
}

fn read_hello(r: &mut Reader<'_>) -> Result<Hello, Fault> {
    Ok(Hello {
        protocol: r.u16("protocol")?,
        cluster_id: r.u64("cluster_id")?,
        node_id: r.u64("node_id")?,
        incarnation: r.u64("incarnation")?,
        epoch: r.u64("epoch")?,
        nonce: r.array::<NONCE_LEN>("nonce")?,
    })
}

fn read_message(r: &mut Reader<'_>) -> Result<(u8, String), Fault> {
    let code = r.u8("code")?;
    let at = r.pos;
    let len = usize::from(r.u16("message_len")?);
    if len > MAX_MESSAGE_BYTES {
        return Err((
            at,
            FrameFault::MessageTooLong {
                len,
                max: MAX_MESSAGE_BYTES,
            },
        ));
    }
    let at = r.pos;
    let bytes = r.bytes(len, "message")?;
    let message = std::str::from_utf8(bytes).map_err(|_| (at, FrameFault::BadUtf8))?;
    Ok((code, message.to_owned()))
}

fn read_rebuild(r: &mut Reader<'_>) -> Result<RebuildRequest, Fault> {
    Ok(RebuildRequest {
        fresh: r.flag("fresh")?,
    })
}

fn read_file(r: &mut Reader<'_>) -> Result<FileChunk, Fault> {
    let at = r.pos;
    let len = usize::from(r.u16("name_len")?);
    if len > MAX_FILE_NAME {
        return Err((
            at,
            FrameFault::BadFileName {
                why: "longer than 1024 bytes",
            },
        ));
    }
    let at = r.pos;
    let bytes = r.bytes(len, "name")?;
    let name = std::str::from_utf8(bytes).map_err(|_| (at, FrameFault::BadUtf8))?;
    check_file_name(name).map_err(|f| (at, f))?;
    let offset = r.u64("offset")?;
    let total_len = r.u64("total_len")?;
    let at = r.pos;
    let n = r.remaining();
    check_file_chunk(offset, n, total_len).map_err(|f| (at, f))?;
    let data = r.bytes(n, "data")?.to_vec();
    Ok(FileChunk {
        name: name.to_owned(),
        offset,
        total_len,
        data,
    })
}

fn read_batches(r: &mut Reader<'_>, limits: &FrameLimits) -> Result<Batches, Fault> {
    let origin = r.u64("origin")?;
    let at = r.pos;
    let count = r.u32("count")?;
    check_batch_count(count, limits).map_err(|f| (at, f))?;
    // Each batch takes at least its header: a count the bytes cannot hold is refused
    // before the vector is sized by it.
    let room = r.remaining() / BATCH_HEADER_LEN;
    if count as usize > room {
        return Err((at, FrameFault::CountExceedsPayload { count, room }));
    }
    let mut batches = Vec::with_capacity(count as usize);
    let mut before = None;
    for index in 0..count {
        let at = r.pos;
        let origin_lsn = r.u64("origin_lsn")?;
        let prev_origin_lsn = r.u64("prev_origin_lsn")?;
        let stamp = r.u64("stamp")?;
        let len = r.u32("batch length")?;
        check_batch(index, before, origin_lsn, prev_origin_lsn, len, limits)
            .map_err(|f| (at, f))?;
        let payload = r.bytes(len as usize, "batch payload")?.to_vec();
        before = Some(origin_lsn);
        batches.push(Batch {
            origin_lsn,
            prev_origin_lsn,
            stamp,
            payload,
        });
    }
    Ok(Batches { origin, batches })
}

/// A bounds-checked reader over a payload; every read names its field for the error.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn bytes(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], Fault> {
        if n > self.remaining() {
            return Err((self.pos, FrameFault::Truncated { field }));
        }
        let b = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(b)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], Fault> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(N, field)?);
        Ok(a)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, Fault> {
        Ok(self.array::<1>(field)?[0])
    }

    /// A byte that must be 0 or 1.
    fn flag(&mut self, field: &'static str) -> Result<bool, Fault> {
        let at = self.pos;
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            found => Err((at, FrameFault::BadFlag { field, found })),
        }
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, Fault> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, Fault> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, Fault> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }
}

fn u32_le(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

/// The incremental decoder of one connection's byte stream: [`FrameDecoder::feed`] the
/// bytes read, then call [`FrameDecoder::next_frame`] until it answers
/// [`Decoded::Incomplete`]. A frame arriving a byte at a time is decoded exactly as one
/// arriving whole; each call re-reads only the frame's 16 header bytes until its last byte
/// is there. After an error the stream cannot be trusted again: every later call returns
/// the same error (close the connection).
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    limits: FrameLimits,
    buf: Vec<u8>,
    /// Start of the undecoded bytes in `buf`.
    pos: usize,
    /// Stream offset of `buf[pos]`.
    offset: u64,
    failed: Option<PeerError>,
}

impl FrameDecoder {
    /// A decoder for a new stream.
    pub fn new(limits: FrameLimits) -> FrameDecoder {
        FrameDecoder {
            limits,
            buf: Vec::new(),
            pos: 0,
            offset: 0,
            failed: None,
        }
    }

    /// Appends bytes read from the stream. Read at most what [`Decoded::Incomplete`] asked
    /// for (or a fixed chunk) to keep the buffer within one frame and one read.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next frame, [`Decoded::Incomplete`], or the error at its stream offset.
    pub fn next_frame(&mut self) -> Result<Decoded, PeerError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match decode_at(&self.buf[self.pos..], &self.limits) {
            Ok(Decoded::Frame { frame, len }) => {
                self.pos += len;
                self.offset += len as u64;
                Ok(Decoded::Frame { frame, len })
            }
            Ok(incomplete) => Ok(incomplete),
            Err((at, fault)) => {
                let e = PeerError::Frame {
                    offset: self.offset + at as u64,
                    fault,
                };
                self.failed = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Bytes fed but not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Stream offset of the next undecoded byte (bytes of whole frames decoded so far).
    pub fn stream_offset(&self) -> u64 {
        self.offset
    }
}

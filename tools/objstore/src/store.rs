//! [`Store`]: a blocking S3 client over `object_store`, with its own small runtime.
//!
//! Whole objects appear only when complete: a small object is one `PutObject`, a large one
//! a multipart upload that becomes visible at `CompleteMultipartUpload` (an interrupted
//! one is aborted, or expires by the bucket's lifecycle rule, and is never listed).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey, Checksum};
use object_store::path::Path as ObjPath;
use object_store::{ClientConfigKey, ObjectStore, PutPayload, RetryConfig};

use crate::{Error, Location, Result, S3Settings};

/// Size of each part of a multipart upload, of each ranged read, and of each chunk whose
/// CRC32C is recorded: 8 MiB.
pub const PART_SIZE: u64 = 8 << 20;

/// Parts or ranged reads in flight at once.
const PARALLEL: usize = 4;

/// A bucket and prefix on an S3-compatible store, used from plain threads.
pub struct Store {
    rt: tokio::runtime::Runtime,
    s3: Arc<AmazonS3>,
    bucket: String,
    prefix: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.url())
    }
}

/// An object listed: its key relative to the store's prefix, and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Key relative to the prefix (`n1-t1/...`).
    pub rel: String,
    /// Bytes.
    pub size: u64,
}

impl Store {
    /// Connects to `loc` (which must be `s3://`), taking the settings not given in `cfg`
    /// from the `AWS_*` environment variables.
    pub fn connect(loc: &Location, cfg: &S3Settings) -> Result<Store> {
        let Location::S3 { bucket, prefix } = loc else {
            return Err(Error::BadLocation {
                url: loc.display(),
                reason: "not an s3:// location",
            });
        };
        let url = loc.display();
        let cfg_err = |e: &dyn std::fmt::Display| Error::Config {
            url: url.clone(),
            reason: e.to_string(),
        };
        let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
        if let Some(e) = &cfg.endpoint {
            b = b.with_endpoint(e);
        }
        if let Some(r) = &cfg.region {
            b = b.with_region(r);
        }
        if let Some(k) = &cfg.access_key_id {
            b = b.with_access_key_id(k);
        }
        if let Some(s) = &cfg.secret_access_key {
            b = b.with_secret_access_key(s);
        }
        if let Some(h) = cfg.allow_http {
            b = b.with_allow_http(h);
        }
        let retry = RetryConfig {
            max_retries: 3,
            retry_timeout: Duration::from_secs(20),
            ..RetryConfig::default()
        };
        // Through with_config, not with_client_options: that would drop what from_env set
        // (AWS_ALLOW_HTTP among them).
        let s3 = b
            .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout), "60s")
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
                "5s",
            )
            .with_retry(retry)
            // Every PUT and part carries x-amz-checksum-sha256: the store checks the bytes it
            // received before it keeps them.
            .with_checksum_algorithm(Checksum::SHA256)
            .build()
            .map_err(|e| cfg_err(&e))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("duplex-s3")
            .enable_all()
            .build()
            .map_err(|e| cfg_err(&e))?;
        Ok(Store {
            rt,
            s3: Arc::new(s3),
            bucket: bucket.clone(),
            prefix: prefix.clone(),
        })
    }

    /// `s3://bucket/prefix`.
    pub fn url(&self) -> String {
        Location::S3 {
            bucket: self.bucket.clone(),
            prefix: self.prefix.clone(),
        }
        .display()
    }

    /// `s3://bucket/prefix/rel`, for messages.
    pub fn object_url(&self, rel: &str) -> String {
        format!("s3://{}/{}", self.bucket, self.key(rel))
    }

    fn key(&self, rel: &str) -> String {
        match (self.prefix.is_empty(), rel.is_empty()) {
            (true, _) => rel.to_owned(),
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}/{}", self.prefix, rel),
        }
    }

    fn path(&self, rel: &str) -> ObjPath {
        ObjPath::from(self.key(rel))
    }

    fn req(&self, op: &'static str, rel: &str, e: &object_store::Error) -> Error {
        match e {
            object_store::Error::NotFound { .. } => Error::Missing {
                object: self.object_url(rel),
                hint: "",
            },
            _ => Error::Request {
                op,
                object: self.object_url(rel),
                reason: redact(&chain(e)),
            },
        }
    }

    /// Writes `data` as one object (visible only once whole).
    pub fn put_bytes(&self, rel: &str, data: Bytes) -> Result<()> {
        let p = self.path(rel);
        self.rt
            .block_on(self.s3.put(&p, PutPayload::from(data)))
            .map(|_| ())
            .map_err(|e| self.req("put", rel, &e))
    }

    /// Uploads the local file `src` as `rel`: one request up to [`PART_SIZE`], else a
    /// multipart upload of `PART_SIZE` parts, [`PARALLEL`] at a time, completed only when
    /// every part is in (aborted on failure). Returns the length and the CRC32C of each
    /// `PART_SIZE` chunk. `progress` is called with the bytes of each part sent.
    pub fn put_file(
        &self,
        rel: &str,
        src: &Path,
        progress: &dyn Fn(u64),
    ) -> Result<(u64, Vec<u32>)> {
        let f = File::open(src).map_err(|e| Error::io("open", src, e))?;
        let len = f.metadata().map_err(|e| Error::io("stat", src, e))?.len();
        let read = |off: u64| -> Result<Bytes> {
            let n = PART_SIZE.min(len - off) as usize;
            let mut buf = vec![0u8; n];
            f.read_exact_at(&mut buf, off)
                .map_err(|e| Error::io("read", src, e))?;
            Ok(Bytes::from(buf))
        };
        if len <= PART_SIZE {
            let data = read(0)?;
            let crc = crc32c::crc32c(&data);
            self.put_bytes(rel, data)?;
            progress(len);
            return Ok((len, vec![crc]));
        }
        let p = self.path(rel);
        self.rt.block_on(async {
            let mut up = self
                .s3
                .put_multipart(&p)
                .await
                .map_err(|e| self.req("start multipart upload", rel, &e))?;
            let mut crcs = Vec::new();
            let sent: Result<()> = async {
                let mut inflight = FuturesUnordered::new();
                let mut off = 0;
                while off < len {
                    let data = read(off)?;
                    let n = data.len() as u64;
                    crcs.push(crc32c::crc32c(&data));
                    let part = up.put_part(PutPayload::from(data));
                    inflight.push(async move { part.await.map(|()| n) });
                    off += n;
                    while inflight.len() >= PARALLEL {
                        if let Some(r) = inflight.next().await {
                            progress(r.map_err(|e| self.req("upload part", rel, &e))?);
                        }
                    }
                }
                while let Some(r) = inflight.next().await {
                    progress(r.map_err(|e| self.req("upload part", rel, &e))?);
                }
                Ok(())
            }
            .await;
            match sent {
                Ok(()) => {
                    up.complete()
                        .await
                        .map_err(|e| self.req("complete multipart upload", rel, &e))?;
                    Ok((len, crcs))
                }
                Err(e) => {
                    // Never completed: the object does not appear; free the parts.
                    let _ = up.abort().await;
                    Err(e)
                }
            }
        })
    }

    /// Reads a whole object.
    pub fn get_bytes(&self, rel: &str) -> Result<Bytes> {
        let p = self.path(rel);
        self.rt
            .block_on(async { self.s3.get(&p).await?.bytes().await })
            .map_err(|e| self.req("get", rel, &e))
    }

    /// Reads bytes `range` of an object (unchecked: the caller checks them).
    pub fn get_range(&self, rel: &str, range: std::ops::Range<u64>) -> Result<Bytes> {
        let p = self.path(rel);
        self.rt
            .block_on(self.s3.get_range(&p, range))
            .map_err(|e| self.req("ranged get", rel, &e))
    }

    /// The size of an object, `None` if it does not exist.
    pub fn head(&self, rel: &str) -> Result<Option<u64>> {
        let p = self.path(rel);
        match self.rt.block_on(self.s3.head(&p)) {
            Ok(m) => Ok(Some(m.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.req("head", rel, &e)),
        }
    }

    /// Every object under `rel/` (recursively), keys relative to the store's prefix.
    pub fn list(&self, rel: &str) -> Result<Vec<Listed>> {
        let p = self.path(rel);
        let base = self.key("");
        let strip = |k: &str| -> String {
            if base.is_empty() {
                k.to_owned()
            } else {
                k.strip_prefix(&base)
                    .map(|r| r.trim_start_matches('/').to_owned())
                    .unwrap_or_else(|| k.to_owned())
            }
        };
        let v: Vec<object_store::ObjectMeta> = self
            .rt
            .block_on(self.s3.list(Some(&p)).try_collect())
            .map_err(|e| self.req("list", rel, &e))?;
        let mut out: Vec<Listed> = v
            .into_iter()
            .map(|m| Listed {
                rel: strip(m.location.as_ref()),
                size: m.size,
            })
            .collect();
        out.sort_by(|a, b| a.rel.cmp(&b.rel));
        Ok(out)
    }

    /// The names of the "directories" directly under `rel/`.
    pub fn list_dirs(&self, rel: &str) -> Result<Vec<String>> {
        let p = self.path(rel);
        let r = self
            .rt
            .block_on(self.s3.list_with_delimiter(Some(&p)))
            .map_err(|e| self.req("list", rel, &e))?;
        let mut out: Vec<String> = r
            .common_prefixes
            .iter()
            .filter_map(|c| c.filename().map(str::to_owned))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Deletes an object (one that does not exist is no error).
    pub fn delete(&self, rel: &str) -> Result<()> {
        let p = self.path(rel);
        match self.rt.block_on(self.s3.delete(&p)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.req("delete", rel, &e)),
        }
    }

    /// Downloads `rel`, of `len` bytes whose `PART_SIZE` chunks have the CRC32Cs `crcs`,
    /// into the new file `dst`: ranged reads, [`PARALLEL`] at a time, each chunk checked
    /// before it is written at its offset; then fsynced. A damaged chunk is
    /// [`Error::Corrupt`] naming the object and the chunk's byte range.
    pub fn get_file(
        &self,
        rel: &str,
        len: u64,
        crcs: &[u32],
        dst: &Path,
        progress: &dyn Fn(u64),
    ) -> Result<()> {
        let chunks = len.div_ceil(PART_SIZE).max(1) as usize;
        if crcs.len() != chunks {
            return Err(Error::Malformed {
                object: self.object_url(rel),
                reason: format!("{} chunk checksums for {len} bytes", crcs.len()),
            });
        }
        let f = File::create(dst).map_err(|e| Error::io("create", dst, e))?;
        let p = self.path(rel);
        self.rt.block_on(async {
            let reads = futures::stream::iter(0..chunks)
                .map(|i| {
                    let p = &p;
                    async move {
                        let r = i as u64 * PART_SIZE..((i as u64 + 1) * PART_SIZE).min(len);
                        let b = if len == 0 {
                            Ok(Bytes::new())
                        } else {
                            self.s3.get_range(p, r.clone()).await
                        };
                        (i, r, b)
                    }
                })
                .buffer_unordered(PARALLEL);
            futures::pin_mut!(reads);
            while let Some((i, r, b)) = reads.next().await {
                let b = b.map_err(|e| self.req("ranged get", rel, &e))?;
                if b.len() as u64 != r.end - r.start {
                    return Err(Error::Length {
                        object: self.object_url(rel),
                        expected: len,
                        found: r.start + b.len() as u64,
                    });
                }
                let found = crc32c::crc32c(&b);
                if found != crcs[i] {
                    return Err(Error::Corrupt {
                        object: self.object_url(rel),
                        offset: r.start,
                        end: r.end,
                        expected: crcs[i],
                        found,
                    });
                }
                f.write_all_at(&b, r.start)
                    .map_err(|e| Error::io("write", dst, e))?;
                progress(b.len() as u64);
            }
            Ok(())
        })?;
        f.sync_all().map_err(|e| Error::io("fsync", dst, e))
    }

    /// Reads the whole objects `parts` (key, offset in the file, length, CRC32C) into
    /// `dst` at their offsets, [`PARALLEL`] at a time, each checked against its CRC32C
    /// before it is written; then fsyncs. Returns (crc, len) of each part in order.
    pub fn get_objects_into(
        &self,
        parts: &[(String, u64, u64, u32)],
        dst: &Path,
        progress: &dyn Fn(u64),
    ) -> Result<Vec<(u32, u64)>> {
        let f = File::create(dst).map_err(|e| Error::io("create", dst, e))?;
        self.rt.block_on(async {
            let reads = futures::stream::iter(parts.iter())
                .map(|(rel, off, len, crc)| {
                    let p = self.path(rel);
                    async move { (rel, *off, *len, *crc, self.s3.get_range(&p, 0..*len).await) }
                })
                .buffer_unordered(PARALLEL);
            futures::pin_mut!(reads);
            while let Some((rel, off, len, crc, b)) = reads.next().await {
                let b = b.map_err(|e| self.req("get", rel, &e))?;
                if b.len() as u64 != len {
                    return Err(Error::Length {
                        object: self.object_url(rel),
                        expected: len,
                        found: b.len() as u64,
                    });
                }
                let found = crc32c::crc32c(&b);
                if found != crc {
                    return Err(Error::Corrupt {
                        object: self.object_url(rel),
                        offset: 0,
                        end: len,
                        expected: crc,
                        found,
                    });
                }
                f.write_all_at(&b, off)
                    .map_err(|e| Error::io("write", dst, e))?;
                progress(len);
            }
            Ok(())
        })?;
        f.sync_all().map_err(|e| Error::io("fsync", dst, e))?;
        Ok(parts.iter().map(|p| (p.3, p.2)).collect())
    }
}

/// An error with its sources, `: `-separated.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// An error message without anything that looks like a signature or a key.
fn redact(s: &str) -> String {
    s.split_whitespace()
        .map(|w| {
            let l = w.to_ascii_lowercase();
            if l.contains("signature")
                || l.contains("credential=")
                || l.contains("x-amz-security-token")
            {
                "<redacted>"
            } else {
                w
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

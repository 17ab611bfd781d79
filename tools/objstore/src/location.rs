//! Where backups or the archive live: a local directory or `s3://bucket/prefix`.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// A backup or archive location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A directory.
    Local(PathBuf),
    /// A bucket and a key prefix (no leading or trailing `/`; may be empty).
    S3 {
        /// Bucket name.
        bucket: String,
        /// Key prefix, `a/b` for `s3://bucket/a/b/`.
        prefix: String,
    },
}

/// True if `p` is written `s3://...`.
pub fn is_s3(p: &Path) -> bool {
    p.to_str().is_some_and(|s| s.starts_with("s3://"))
}

impl Location {
    /// Parses `s3://bucket[/prefix]`, or takes anything else as a path.
    pub fn parse(p: &Path) -> Result<Location> {
        let Some(s) = p.to_str().filter(|s| s.starts_with("s3://")) else {
            return Ok(Location::Local(p.to_path_buf()));
        };
        let bad = |reason| Error::BadLocation {
            url: s.to_owned(),
            reason,
        };
        let rest = &s["s3://".len()..];
        if rest.contains('@') {
            return Err(Error::BadLocation {
                url: "s3://<redacted>".into(),
                reason: "credentials do not belong in the location (use AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or the config file)",
            });
        }
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad("no bucket"));
        }
        if !(3..=63).contains(&bucket.len()) {
            return Err(bad("a bucket name is 3 to 63 characters"));
        }
        if !bucket
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.')
        {
            return Err(bad(
                "a bucket name is lowercase letters, digits, '-' and '.'",
            ));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|c| c == "." || c == "..") || prefix.contains("//") {
            return Err(bad(
                "'.', '..' and empty components are not allowed in the prefix",
            ));
        }
        Ok(Location::S3 {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        })
    }

    /// The location as `s3://bucket/prefix` (or the path).
    pub fn display(&self) -> String {
        match self {
            Location::Local(p) => p.display().to_string(),
            Location::S3 { bucket, prefix } if prefix.is_empty() => format!("s3://{bucket}"),
            Location::S3 { bucket, prefix } => format!("s3://{bucket}/{prefix}"),
        }
    }
}

/// S3 client settings from the server's config file (`[s3]`); each one not set there comes
/// from the environment (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP`, ...). `Debug` never shows the secret. The
/// server's config file reads it as its `[s3]` section.
#[derive(Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Settings {
    /// Endpoint URL (`http://127.0.0.1:9000`); none: AWS.
    pub endpoint: Option<String>,
    /// Region.
    pub region: Option<String>,
    /// Access key id.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<String>,
    /// Allow plain HTTP (an endpoint on loopback or a private network).
    pub allow_http: Option<bool>,
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field(
                "access_key_id",
                &self.access_key_id.as_ref().map(|_| "<set>"),
            )
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_locations() {
        assert_eq!(
            Location::parse(Path::new("/b")).unwrap(),
            Location::Local("/b".into())
        );
        assert_eq!(
            Location::parse(Path::new("s3://bkt/a/b/")).unwrap(),
            Location::S3 {
                bucket: "bkt".into(),
                prefix: "a/b".into()
            }
        );
        assert_eq!(
            Location::parse(Path::new("s3://bkt")).unwrap().display(),
            "s3://bkt"
        );
        for bad in [
            "s3://",
            "s3:///x",
            "s3://BKT/x",
            "s3://b/../x",
            "s3://b/a//c",
        ] {
            assert!(Location::parse(Path::new(bad)).is_err(), "{bad}");
        }
        let e = Location::parse(Path::new("s3://key:secret@bkt/x")).unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
        let s = S3Settings {
            secret_access_key: Some("hunter2".into()),
            ..S3Settings::default()
        };
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}

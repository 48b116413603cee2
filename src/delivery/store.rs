//! The gateway's own image store (`delivery.store`): a local directory or any S3-compatible bucket,
//! both through the `object_store` crate, so there is one code path. Images are written whole
//! under their content-addressed `ImageName` (a local write goes to a temporary file first and is
//! renamed, so a reader never sees half an image), read back as a stream, and, for a local
//! directory, swept once older than `delivery.retention_secs` (a bucket uses its own lifecycle rules).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, ClientOptions, GetResult, ObjectMeta, ObjectStore, ObjectStoreExt, PutOptions,
    RetryConfig,
};
use secrecy::{ExposeSecret, SecretString};

use crate::records::ImageName;

/// Where re-hosted images go.
#[derive(Debug, Clone)]
pub enum StoreChoice {
    /// Nowhere: BFL's URL passes through.
    None,
    /// A directory the gateway owns.
    Local { dir: PathBuf },
    /// An S3-compatible bucket.
    S3(S3Settings),
}

/// An S3-compatible bucket; credentials not given here come from the usual `AWS_*` variables.
#[derive(Debug, Clone)]
pub struct S3Settings {
    pub bucket: String,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub path_style: bool,
    /// Key prefix inside the bucket, without slashes at either end ("" for none).
    pub prefix: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<SecretString>,
}

/// Why the store could not be opened or used. Messages are for logs, not clients.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("delivery.local_dir: {0}")]
    LocalDir(std::io::Error),
    #[error("{0}")]
    Objects(#[from] object_store::Error),
    #[error("delivery.signing_key cannot key HMAC-SHA256")]
    SigningKey,
}

#[derive(Clone)]
pub struct ImageStore {
    objects: Arc<dyn ObjectStore>,
    prefix: Option<Path>,
    /// Object attributes (Content-Type) are kept: S3 has them, a local directory does not.
    attributes: bool,
    /// Old images are swept by the gateway (a local directory) rather than by the bucket's rules.
    sweeps: bool,
}

impl std::fmt::Debug for ImageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ImageStore({})", self.objects)
    }
}

/// Most images removed by one sweep, so one sweep's work is bounded.
const MAX_DELETES_PER_SWEEP: usize = 10_000;

impl ImageStore {
    /// The configured store, or `None` when re-hosting is off. `timeout` bounds one exchange
    /// with a bucket.
    pub fn open(choice: &StoreChoice, timeout: Duration) -> Result<Option<ImageStore>, StoreError> {
        match choice {
            StoreChoice::None => Ok(None),
            StoreChoice::Local { dir } => {
                std::fs::create_dir_all(dir).map_err(StoreError::LocalDir)?;
                let objects = LocalFileSystem::new_with_prefix(dir)?;
                Ok(Some(ImageStore {
                    objects: Arc::new(objects),
                    prefix: None,
                    attributes: false,
                    sweeps: true,
                }))
            }
            StoreChoice::S3(s3) => {
                let mut builder = AmazonS3Builder::from_env()
                    .with_bucket_name(&s3.bucket)
                    .with_virtual_hosted_style_request(!s3.path_style)
                    .with_client_options(
                        ClientOptions::new()
                            .with_timeout(timeout)
                            .with_connect_timeout(timeout.min(Duration::from_secs(5))),
                    )
                    // The rehost itself is retried once (`rehost`): no second layer of retries here.
                    .with_retry(RetryConfig {
                        max_retries: 0,
                        retry_timeout: timeout,
                        ..RetryConfig::default()
                    });
                if let Some(region) = &s3.region {
                    builder = builder.with_region(region);
                }
                if let Some(endpoint) = &s3.endpoint {
                    // An operator who names an http:// endpoint (a store on a private network) means it.
                    builder =
                        builder.with_endpoint(endpoint).with_allow_http(endpoint.starts_with("http://"));
                }
                if let Some(id) = &s3.access_key_id {
                    builder = builder.with_access_key_id(id);
                }
                if let Some(secret) = &s3.secret_access_key {
                    builder = builder.with_secret_access_key(secret.expose_secret());
                }
                let prefix = (!s3.prefix.is_empty()).then(|| Path::from(s3.prefix.as_str()));
                Ok(Some(ImageStore {
                    objects: Arc::new(builder.build()?),
                    prefix,
                    attributes: true,
                    sweeps: false,
                }))
            }
        }
    }

    fn path(&self, name: &ImageName) -> Path {
        match &self.prefix {
            Some(prefix) => prefix.clone().join(name.as_str()),
            None => Path::from(name.as_str()),
        }
    }

    /// Writes `bytes` as `name`. The same name always holds the same bytes, so a second write
    /// of an image already kept changes nothing.
    pub async fn put(&self, name: &ImageName, bytes: Bytes) -> Result<(), StoreError> {
        let mut options = PutOptions::default();
        if self.attributes {
            let mut attributes = Attributes::new();
            attributes.insert(Attribute::ContentType, name.format().content_type().into());
            attributes.insert(Attribute::CacheControl, "public, max-age=31536000, immutable".into());
            options.attributes = attributes;
        }
        self.objects.put_opts(&self.path(name), bytes.into(), options).await?;
        Ok(())
    }

    /// The image and its metadata, ready to stream; `None` when it is not (or no longer) kept.
    pub async fn get(&self, name: &ImageName) -> Result<Option<GetResult>, StoreError> {
        match self.objects.get(&self.path(name)).await {
            Ok(found) => Ok(Some(found)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The image's metadata without its body (HEAD requests).
    pub async fn head(&self, name: &ImageName) -> Result<Option<ObjectMeta>, StoreError> {
        match self.objects.head(&self.path(name)).await {
            Ok(meta) => Ok(Some(meta)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// True when old images are removed by `sweep` (a local directory).
    pub fn sweeps(&self) -> bool {
        self.sweeps
    }

    /// Removes images last written more than `retention` ago, at most `MAX_DELETES_PER_SWEEP`
    /// of them; files that are not image names (anything else in the directory) are left alone.
    /// Returns how many went.
    pub async fn sweep(&self, retention: Duration) -> Result<usize, StoreError> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let cutoff = i64::try_from(now.saturating_sub(retention).as_secs()).unwrap_or(i64::MAX);
        let mut listing = self.objects.list(self.prefix.as_ref());
        let mut removed = 0;
        while let Some(meta) = listing.next().await {
            let meta = meta?;
            let ours = meta.location.filename().and_then(ImageName::parse).is_some();
            if ours && meta.last_modified.timestamp() <= cutoff {
                match self.objects.delete(&meta.location).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => removed += 1,
                    Err(e) => return Err(e.into()),
                }
                if removed >= MAX_DELETES_PER_SWEEP {
                    break;
                }
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::StoredFormat;

    #[tokio::test]
    async fn a_sweep_removes_old_images_and_nothing_else() {
        let dir = tempfile::tempdir().expect("temp dir");
        let choice = StoreChoice::Local { dir: dir.path().join("images") };
        let store = ImageStore::open(&choice, Duration::from_secs(5)).expect("opens").expect("a store");
        let name = ImageName::of(b"png bytes", StoredFormat::Png);
        store.put(&name, Bytes::from_static(b"png bytes")).await.expect("written");
        store.put(&name, Bytes::from_static(b"png bytes")).await.expect("written again, unchanged");
        std::fs::write(dir.path().join("images/notes.txt"), "not ours").expect("write");
        assert_eq!(store.sweep(Duration::from_secs(3600)).await.expect("sweeps"), 0, "young images stay");
        assert!(store.get(&name).await.expect("reads").is_some());
        assert_eq!(store.sweep(Duration::ZERO).await.expect("sweeps"), 1);
        assert!(store.get(&name).await.expect("reads").is_none());
        assert!(store.head(&name).await.expect("reads").is_none());
        assert!(dir.path().join("images/notes.txt").exists(), "files that are not image names stay");
    }
}

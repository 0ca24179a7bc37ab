//! An `ObjectStore` that encrypts every object it writes and decrypts every object it reads.
//!
//! The Delta tables sit on top of this store, so everything they write — Parquet data files, the JSON commit
//! log with its column statistics, checkpoints — reaches the disk (or the S3 bucket) only as sealed chunks
//! ([`super::sealed_object`]). Sizes reported by `head`/`list` are plaintext sizes, so Delta and Parquet see an
//! ordinary store. On the local filesystem every completed write is fsync'd together with its directory, so
//! a table commit the core acknowledged survives power loss, not only a crash.

use super::data_keys::DataKeyring;
use super::sealed_object::{self, CHUNK, HEADER, Header};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetRange, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, UploadPart,
};
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

const STORE: &str = "tokumei-encrypted";

fn generic(e: impl std::error::Error + Send + Sync + 'static) -> object_store::Error {
    object_store::Error::Generic {
        store: STORE,
        source: Box::new(e),
    }
}

/// Wraps an inner store with encryption at rest.
#[derive(Clone)]
pub struct EncryptedStore {
    inner: Arc<dyn ObjectStore>,
    keys: Arc<DataKeyring>,
    /// For a local filesystem root: the directory to fsync after writes.
    local_root: Option<PathBuf>,
}

impl fmt::Debug for EncryptedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EncryptedStore({})", self.inner)
    }
}

impl fmt::Display for EncryptedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EncryptedStore({})", self.inner)
    }
}

impl EncryptedStore {
    /// Encrypts with the keyring's current data key; `local_root` is the filesystem root of a `LocalFileSystem`
    /// inner store (for fsync), `None` for object stores that are durable on their own.
    pub fn new(inner: Arc<dyn ObjectStore>, keys: Arc<DataKeyring>, local_root: Option<PathBuf>) -> Self {
        EncryptedStore {
            inner,
            keys,
            local_root,
        }
    }

    fn sync_local(&self, location: &Path) -> object_store::Result<()> {
        let Some(root) = &self.local_root else {
            return Ok(());
        };
        let mut file = root.clone();
        for part in location.parts() {
            file.push(part.as_ref());
        }
        let sync = |p: &std::path::Path| std::fs::File::open(p).and_then(|f| f.sync_all());
        sync(&file).map_err(generic)?;
        if let Some(parent) = file.parent() {
            sync(parent).map_err(generic)?;
        }
        Ok(())
    }

    async fn read_header(&self, location: &Path, options: GetOptions) -> object_store::Result<(Header, ObjectMeta)> {
        let opts = GetOptions {
            range: Some(GetRange::Bounded(0..HEADER)),
            head: false,
            ..options
        };
        let res = self.inner.get_opts(location, opts).await?;
        let meta = res.meta.clone();
        let bytes = res.bytes().await?;
        let header = Header::parse(&bytes).map_err(generic)?;
        Ok((header, meta))
    }

    fn plain_meta(mut meta: ObjectMeta) -> object_store::Result<ObjectMeta> {
        meta.size = sealed_object::plain_len(meta.size).map_err(generic)?;
        Ok(meta)
    }

    async fn read_plain(
        &self,
        location: &Path,
        header: &Header,
        sealed_total: u64,
        range: Range<u64>,
    ) -> object_store::Result<Bytes> {
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        let cipher = self.keys.object_cipher(header).map_err(generic)?;
        let total_chunks = sealed_object::chunk_count(sealed_total).map_err(generic)?;
        let first = range.start / CHUNK;
        let last = (range.end - 1) / CHUNK;
        let sealed_range = sealed_object::sealed_range(first..last + 1, sealed_total);
        let sealed = self.inner.get_range(location, sealed_range).await?;
        let plain = sealed_object::open_chunks(&cipher, header, first, total_chunks, &sealed).map_err(generic)?;
        let skip = (range.start - first * CHUNK) as usize;
        let len = (range.end - range.start) as usize;
        Ok(Bytes::from(plain).slice(skip..skip + len))
    }
}

fn resolve_range(range: &GetRange, len: u64) -> object_store::Result<Range<u64>> {
    let r = match range {
        GetRange::Bounded(r) => {
            if r.start >= len && !(r.start == 0 && len == 0) {
                return Err(generic(std::io::Error::other(format!(
                    "range start {} beyond object length {len}",
                    r.start
                ))));
            }
            r.start..r.end.min(len)
        }
        GetRange::Offset(o) => {
            if *o > len {
                return Err(generic(std::io::Error::other(format!(
                    "offset {o} beyond object length {len}"
                ))));
            }
            *o..len
        }
        GetRange::Suffix(n) => len.saturating_sub(*n)..len,
    };
    Ok(r)
}

#[async_trait]
impl ObjectStore for EncryptedStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let plain: Bytes = payload.into();
        let (header, cipher) = self.keys.new_object().map_err(generic)?;
        let sealed = sealed_object::seal(&cipher, header, &plain).map_err(generic)?;
        let res = self.inner.put_opts(location, PutPayload::from(sealed), opts).await?;
        self.sync_local(location)?;
        Ok(res)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        let (header, cipher) = self.keys.new_object().map_err(generic)?;
        Ok(Box::new(SealingUpload {
            inner,
            cipher,
            header,
            pending_plain: Vec::new(),
            pending_sealed: header.to_bytes().to_vec(),
            next_chunk: 0,
            store: self.clone(),
            location: location.clone(),
        }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        if options.head {
            let res = self.inner.get_opts(location, options).await?;
            let meta = Self::plain_meta(res.meta)?;
            return Ok(GetResult {
                payload: GetResultPayload::Stream(futures::stream::empty().boxed()),
                range: 0..meta.size,
                meta,
                attributes: res.attributes,
            });
        }
        let range = options.range.clone();
        let (sealed_meta, attributes, plain) = match range {
            None => {
                let res = self.inner.get_opts(location, options).await?;
                let sealed_meta = res.meta.clone();
                let attributes = res.attributes.clone();
                let bytes = res.bytes().await?;
                let header = Header::parse(&bytes).map_err(generic)?;
                let cipher = self.keys.object_cipher(&header).map_err(generic)?;
                let total = sealed_object::chunk_count(bytes.len() as u64).map_err(generic)?;
                let plain = sealed_object::open_chunks(&cipher, &header, 0, total, &bytes[HEADER as usize..])
                    .map_err(generic)?;
                (sealed_meta, attributes, Bytes::from(plain))
            }
            Some(r) => {
                let (header, sealed_meta) = self.read_header(location, options).await?;
                let len = sealed_object::plain_len(sealed_meta.size).map_err(generic)?;
                let plain_range = resolve_range(&r, len)?;
                let plain = self
                    .read_plain(location, &header, sealed_meta.size, plain_range.clone())
                    .await?;
                let meta = Self::plain_meta(sealed_meta)?;
                return Ok(GetResult {
                    payload: GetResultPayload::Stream(futures::stream::once(async move { Ok(plain) }).boxed()),
                    meta,
                    range: plain_range,
                    attributes: Default::default(),
                });
            }
        };
        let meta = Self::plain_meta(sealed_meta)?;
        let len = plain.len() as u64;
        Ok(GetResult {
            payload: GetResultPayload::Stream(futures::stream::once(async move { Ok(plain) }).boxed()),
            meta,
            range: 0..len,
            attributes,
        })
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> object_store::Result<Vec<Bytes>> {
        if ranges.is_empty() {
            return Ok(Vec::new());
        }
        let (header, sealed_meta) = self.read_header(location, GetOptions::default()).await?;
        let len = sealed_object::plain_len(sealed_meta.size).map_err(generic)?;
        let mut out = Vec::with_capacity(ranges.len());
        for r in ranges {
            let r = resolve_range(&GetRange::Bounded(r.clone()), len)?;
            out.push(self.read_plain(location, &header, sealed_meta.size, r).await?);
        }
        Ok(out)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner
            .list(prefix)
            .map(|m| m.and_then(EncryptedStore::plain_meta))
            .boxed()
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner
            .list_with_offset(prefix, offset)
            .map(|m| m.and_then(EncryptedStore::plain_meta))
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let mut res = self.inner.list_with_delimiter(prefix).await?;
        res.objects = res
            .objects
            .into_iter()
            .map(EncryptedStore::plain_meta)
            .collect::<Result<_, _>>()?;
        Ok(res)
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await?;
        self.sync_local(to)
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> object_store::Result<()> {
        self.inner.rename_opts(from, to, options).await?;
        self.sync_local(to)
    }
}

/// A streaming upload: plaintext is sealed chunk by chunk; a full chunk is only sealed once more data arrives,
/// because the last chunk must carry the last-chunk flag. Sealed bytes go to the inner upload in parts of at
/// least 5 MiB (the S3 minimum for every part but the last).
struct SealingUpload {
    inner: Box<dyn MultipartUpload>,
    cipher: aes_gcm::Aes256Gcm,
    header: Header,
    pending_plain: Vec<u8>,
    pending_sealed: Vec<u8>,
    next_chunk: u64,
    store: EncryptedStore,
    location: Path,
}

impl fmt::Debug for SealingUpload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealingUpload({})", self.location)
    }
}

const MIN_PART: usize = 5 * 1024 * 1024;

impl SealingUpload {
    fn seal_full_chunks(&mut self) -> object_store::Result<()> {
        let c = CHUNK as usize;
        let mut consumed = 0;
        // Keep at least one byte back: the chunk holding the final byte is sealed at completion.
        while self.pending_plain.len() - consumed > c {
            let chunk = &self.pending_plain[consumed..consumed + c];
            sealed_object::seal_chunk(
                &self.cipher,
                &self.header,
                self.next_chunk,
                false,
                chunk,
                &mut self.pending_sealed,
            )
            .map_err(generic)?;
            self.next_chunk += 1;
            consumed += c;
        }
        self.pending_plain.drain(..consumed);
        Ok(())
    }
}

#[async_trait]
impl MultipartUpload for SealingUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        for b in data.iter() {
            self.pending_plain.extend_from_slice(b);
        }
        if let Err(e) = self.seal_full_chunks() {
            return Box::pin(futures::future::ready(Err(e)));
        }
        if self.pending_sealed.len() >= MIN_PART {
            let part = std::mem::take(&mut self.pending_sealed);
            return self.inner.put_part(PutPayload::from(part));
        }
        Box::pin(futures::future::ready(Ok(())))
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        self.seal_full_chunks()?;
        let rest = std::mem::take(&mut self.pending_plain);
        sealed_object::seal_chunk(
            &self.cipher,
            &self.header,
            self.next_chunk,
            true,
            &rest,
            &mut self.pending_sealed,
        )
        .map_err(generic)?;
        let part = std::mem::take(&mut self.pending_sealed);
        self.inner.put_part(PutPayload::from(part)).await?;
        let res = self.inner.complete().await?;
        self.store.sync_local(&self.location)?;
        Ok(res)
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.inner.abort().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use object_store::local::LocalFileSystem;
    use object_store::memory::InMemory;

    fn keys() -> Arc<DataKeyring> {
        Arc::new(DataKeyring::for_tests(5, [3u8; 32]))
    }

    #[tokio::test]
    async fn put_get_ranges_head_list_through_memory() {
        let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let store = EncryptedStore::new(inner.clone(), keys(), None);
        let data: Vec<u8> = (0..(2 * CHUNK as usize + 1000)).map(|i| (i % 253) as u8).collect();
        let p = Path::from("t/part-1.parquet");
        store.put(&p, PutPayload::from(data.clone())).await.unwrap();
        let raw = inner.get(&p).await.unwrap().bytes().await.unwrap();
        assert!(!raw.windows(64).any(|w| data.windows(64).next() == Some(w)));
        assert_eq!(store.head(&p).await.unwrap().size, data.len() as u64);
        assert_eq!(store.get(&p).await.unwrap().bytes().await.unwrap(), data);
        for r in [
            0..1,
            5..70_000,
            (CHUNK - 3)..(CHUNK + 3),
            (2 * CHUNK)..(2 * CHUNK + 1000),
        ] {
            let got = store.get_range(&p, r.clone()).await.unwrap();
            assert_eq!(&got[..], &data[r.start as usize..r.end as usize]);
        }
        let suffix = store
            .get_opts(
                &p,
                GetOptions {
                    range: Some(GetRange::Suffix(8)),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(suffix.range, (data.len() as u64 - 8)..data.len() as u64);
        assert_eq!(suffix.bytes().await.unwrap(), &data[data.len() - 8..]);
        let listed: Vec<_> = store.list(None).collect().await;
        assert_eq!(listed[0].as_ref().unwrap().size, data.len() as u64);
    }

    #[tokio::test]
    async fn multipart_matches_single_put_and_local_files_are_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let inner: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        let store = EncryptedStore::new(inner, keys(), Some(dir.path().to_path_buf()));
        for size in [0usize, 10, CHUNK as usize, 3 * CHUNK as usize, 7 * 1024 * 1024 + 5] {
            let data: Vec<u8> = (0..size).map(|i| (i % 241) as u8).collect();
            let p = Path::from(format!("m/{size}.bin"));
            let mut up = store.put_multipart(&p).await.unwrap();
            for piece in data.chunks(100_000) {
                up.put_part(PutPayload::from(piece.to_vec())).await.unwrap();
            }
            up.complete().await.unwrap();
            assert_eq!(store.get(&p).await.unwrap().bytes().await.unwrap(), data, "size {size}");
            assert_eq!(store.head(&p).await.unwrap().size, size as u64);
            let on_disk = std::fs::read(dir.path().join("m").join(format!("{size}.bin"))).unwrap();
            assert_eq!(on_disk.len() as u64, sealed_object::sealed_len(size as u64));
        }
    }
}

//! Encryption at rest of the crypto stores (`database.key`).
//!
//! With a key, matrix-sdk-sqlite encrypts a store's private data (Olm account, sessions, Megolm
//! sessions, cross-signing keys) with a store cipher of its own, kept in the store wrapped by
//! the key the bridge derives from `database.key` (a distinct HKDF `info`; `store/seal.rs`).
//!
//! matrix-sdk-sqlite cannot encrypt an existing store: opened with a key, a store made without
//! one gets a new cipher and can no longer read the data it holds (nor can a store made with a
//! key be read without it). So a key applies to the stores created after it is set: the bridge
//! writes [`SEALED_MARKER`] into a device's directory *before* it creates the store with the
//! key, and opens with the key exactly the stores that have the marker. A store made earlier
//! keeps opening in the clear (start-up and `check-config` say how many; docs/threat-model.md).
//! A store with the marker and no key is refused, never replaced: replacing it would mean a
//! new device with new keys.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use matrix_sdk_sqlite::SqliteCryptoStore;
use zeroize::Zeroizing;

use super::{CryptoError, store_error};

/// The file, in a device's store directory, that says its store was created with the key.
pub const SEALED_MARKER: &str = "interop-bridge.encrypted";
/// matrix-sdk-sqlite's crypto database, in a device's store directory.
const DATABASE_NAME: &str = "matrix-sdk-crypto.sqlite3";

/// Where the crypto stores are and the key of those encrypted at rest.
pub struct CryptoStores {
    dir: PathBuf,
    key: Option<Zeroizing<[u8; 32]>>,
}

impl CryptoStores {
    /// The stores under `dir`; `key`, if any, encrypts the stores created from now on.
    pub fn new(dir: PathBuf, key: Option<Zeroizing<[u8; 32]>>) -> Self {
        Self { dir, key }
    }

    /// Opens (creating if needed) the store in `dir/name`, with the key when it was created
    /// with it or is created now.
    pub(super) async fn open(&self, name: &str) -> Result<SqliteCryptoStore, CryptoError> {
        let path = self.dir.join(name);
        let sealed = path.join(SEALED_MARKER).exists();
        let key = match (&self.key, sealed) {
            (None, true) => {
                return Err(CryptoError::Store(
                    "this crypto store is encrypted at rest: set database.key".to_owned(),
                ));
            }
            (None, false) => None,
            (Some(key), true) => Some(key),
            (Some(key), false) if !path.join(DATABASE_NAME).exists() => {
                mark_sealed(&path).map_err(store_error)?;
                Some(key)
            }
            (Some(_), false) => None,
        };
        SqliteCryptoStore::open_with_key(&path, key.map(|k| &**k))
            .await
            .map_err(store_error)
    }
}

/// Writes the marker of `dir` durably, creating the directory.
fn mark_sealed(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut file = std::fs::File::create(dir.join(SEALED_MARKER))?;
    file.write_all(b"this crypto store is encrypted with a key derived from database.key\n")?;
    file.sync_all()?;
    std::fs::File::open(dir)?.sync_all()
}

/// How many device stores under `dir` are in the clear (a database and no marker), and how
/// many are encrypted at rest.
pub fn store_counts(dir: &Path) -> (usize, usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (0, 0);
    };
    let (mut plain, mut sealed) = (0, 0);
    for entry in entries.flatten() {
        let path = entry.path();
        if path.join(SEALED_MARKER).exists() {
            sealed += 1;
        } else if path.join(DATABASE_NAME).exists() {
            plain += 1;
        }
    }
    (plain, sealed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use matrix_sdk_crypto::store::CryptoStore as _;

    fn key(byte: u8) -> Option<Zeroizing<[u8; 32]>> {
        Some(Zeroizing::new([byte; 32]))
    }

    async fn write_value(stores: &CryptoStores, name: &str) {
        let store = stores.open(name).await.expect("open");
        store
            .set_custom_value("probe", b"needle-value".to_vec())
            .await
            .expect("write");
    }

    async fn read_value(stores: &CryptoStores, name: &str) -> Result<Option<Vec<u8>>, String> {
        let store = stores.open(name).await.map_err(|e| e.to_string())?;
        store
            .get_custom_value("probe")
            .await
            .map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn new_stores_get_the_key_and_old_plain_ones_keep_opening_without_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let plain = CryptoStores::new(dir.path().to_owned(), None);
        write_value(&plain, "old").await;
        let keyed = CryptoStores::new(dir.path().to_owned(), key(7));
        write_value(&keyed, "new").await;
        assert!(dir.path().join("new").join(SEALED_MARKER).exists());
        assert!(!dir.path().join("old").join(SEALED_MARKER).exists());
        assert_eq!(store_counts(dir.path()), (1, 1));

        let expected = Some(b"needle-value".to_vec());
        assert_eq!(read_value(&keyed, "old").await, Ok(expected.clone()));
        assert_eq!(read_value(&keyed, "new").await, Ok(expected));
        let refused = read_value(&plain, "new").await.expect_err("no key");
        assert!(refused.contains("set database.key"), "{refused}");
        let wrong = CryptoStores::new(dir.path().to_owned(), key(8));
        assert!(read_value(&wrong, "new").await.is_err(), "a wrong key");
    }
}
